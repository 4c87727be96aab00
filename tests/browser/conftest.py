"""Fixtures of the browser tests: the real server on a free port, and headless Chromium.

Debian's chromium and chromium-driver are used as installed (/usr/bin/chromium and
/usr/bin/chromedriver); nothing is downloaded. Screenshots go to target/browser/.
"""
import contextlib
import functools
import http.server
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "target" / "browser"


@contextlib.contextmanager
def running_server(*extra_args):
    """Runs target/release/switchboard on 127.0.0.1:0 with these extra flags; yields its base URL."""
    binary = ROOT / "target" / "release" / "switchboard"
    assert binary.exists(), f"build the server first: {binary}"
    log = tempfile.NamedTemporaryFile(prefix="switchboard-browser-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [str(binary), "--bind", "127.0.0.1:0", "--static-dir", str(ROOT / "static"), "--workers", "2", *extra_args],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        address = None
        for _ in range(100):
            text = pathlib.Path(log.name).read_text(errors="replace")
            match = re.search(r"listening on (\S+)", text)
            if match:
                address = match.group(1)
                break
            assert process.poll() is None, f"server exited: {text}"
            time.sleep(0.1)
        assert address, "server did not report its address"
        yield f"http://{address}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        os.unlink(log.name)


@pytest.fixture(scope="session")
def server_url():
    """The server with its default flags, shared by the tests of a session."""
    with running_server() as url:
        yield url


@pytest.fixture
def other_origin():
    """A plain static web server on another port of 127.0.0.1: another origin than the server's.

    Yields a function that puts a page (name, HTML) in its directory and returns the page's URL.
    """
    directory = tempfile.mkdtemp(prefix="switchboard-other-origin-")
    handler = functools.partial(QuietHandler, directory=directory)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def serve(name, html):
        pathlib.Path(directory, name).write_text(html)
        return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"

    try:
        yield serve
    finally:
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(directory, ignore_errors=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def browser_factory():
    """Makes headless Chromium windows (each its own browser), closed after the test."""
    drivers = []

    def make():
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,1000",
            f"--user-data-dir={tempfile.mkdtemp(prefix='switchboard-chromium-')}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.set_page_load_timeout(20)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.quit()


def screenshot(driver, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
