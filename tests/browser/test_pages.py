"""The pages, as a person sees them in a real browser."""
import re
import time
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import running_server, screenshot


def wait_for(driver, condition, seconds=15, what="condition"):
    return WebDriverWait(driver, seconds).until(lambda d: condition(d), message=f"waiting for {what}")


def counter(driver):
    text = driver.find_element(By.ID, "counter").text
    return int(text) if text.isdigit() else None


RECORD_COUNTER = """
const record = { last: null, fell: false, reconnected: false };
window.counterRecord = record;
const counter = document.getElementById("counter");
new MutationObserver(() => {
  const value = Number(counter.textContent);
  if (record.last !== null && value < record.last) record.fell = true;
  record.last = value;
}).observe(counter, { childList: true, characterData: true, subtree: true });
new MutationObserver(() => { record.reconnected = true; })
  .observe(document.getElementById("di-state"), { childList: true, characterData: true, subtree: true });
"""


def test_test_page_counter_rises_and_resets(server_url, browser_factory):
    driver = browser_factory()
    driver.get(server_url + "/test.html")
    wait_for(driver, lambda d: (counter(d) or 0) >= 10, what="the counter to pass 10")
    first = counter(driver)
    time.sleep(0.5)
    assert counter(driver) > first, "the counter keeps rising"
    screenshot(driver, "test-page")

    # The low values after a reset last only as long as the counter takes to climb back, which
    # polling can miss on a busy machine: the page records every value it shows instead, and
    # whether the connection state changed (a reconnect would also restart the counter).
    driver.execute_script(RECORD_COUNTER)
    driver.find_element(By.ID, "reset").click()
    wait_for(driver, lambda d: d.execute_script("return window.counterRecord.fell"), what="the reset")
    assert not driver.execute_script("return window.counterRecord.reconnected"), "reset without a reconnect"

    # The status list shows this page's own three connections.
    wait_for(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#status-list tr")) >= 3,
        what="the lws-status list",
    )
    protocols = driver.find_element(By.ID, "status-list").text
    for name in ("dumb-increment-protocol", "lws-mirror-protocol", "lws-status"):
        assert name in protocols
    screenshot(driver, "test-page-status")


def test_test_page_mirror_reaches_another_window(server_url, browser_factory):
    painter, watcher = browser_factory(), browser_factory()
    for driver in (painter, watcher):
        driver.get(server_url + "/test.html")
        wait_for(
            driver,
            lambda d: d.find_element(By.ID, "mirror-state").text == "connected",
            what="the mirror connection",
        )
    # A stroke drawn in one window appears in the other.
    painter.execute_script(
        "const c = document.getElementById('mirror-canvas');"
        "const at = (x, y, type) => c.dispatchEvent(new PointerEvent(type, {clientX: c.getBoundingClientRect().left + x, clientY: c.getBoundingClientRect().top + y, bubbles: true}));"
        "at(10, 10, 'pointerdown'); for (let i = 1; i <= 20; i++) at(10 + i * 10, 10 + i * 5, 'pointermove'); at(210, 110, 'pointerup');"
    )
    wait_for(
        watcher,
        lambda d: int(d.find_element(By.ID, "mirror-count").text) >= 20,
        what="the strokes in the other window",
    )
    screenshot(watcher, "test-page-mirror")


def join_chat(driver, server_url, nick, room):
    driver.get(server_url + "/chat.html")
    wait_for(driver, lambda d: "connected" in d.find_element(By.ID, "status").text, what="chat connection")
    for field, value in (("nick", nick), ("room", room)):
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.ID, "join").click()
    wait_for(driver, lambda d: nick in d.find_element(By.ID, "members").text, what=f"{nick} in the member list")


def test_chat_page_message_reaches_the_other_window(server_url, browser_factory):
    ann, bob = browser_factory(), browser_factory()
    join_chat(ann, server_url, "ann", "browsers")
    join_chat(bob, server_url, "bob", "browsers")
    wait_for(ann, lambda d: "bob" in d.find_element(By.ID, "members").text, what="bob in ann's member list")

    ann.find_element(By.ID, "text").send_keys("hello from ann")
    ann.find_element(By.ID, "send").click()
    wait_for(
        bob,
        lambda d: any("hello from ann" in m.text for m in d.find_elements(By.CSS_SELECTOR, "#messages .msg")),
        what="ann's message in bob's window",
    )
    screenshot(ann, "chat-ann")
    screenshot(bob, "chat-bob")


# A page that opens a WebSocket to the URL in its `?ws=` parameter and records what happens.
WEBSOCKET_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head>
<body><p id="state">connecting</p>
<script>
const record = { opened: false, messages: 0, closed: null };
window.wsRecord = record;
const state = document.getElementById("state");
const ws = new WebSocket(new URLSearchParams(location.search).get("ws"), "dumb-increment-protocol");
ws.onopen = () => { record.opened = true; record.extensions = ws.extensions; state.textContent = "open"; };
ws.onmessage = () => { record.messages += 1; state.textContent = "messages: " + record.messages; };
ws.onclose = (event) => { record.closed = event.code; state.textContent += " / closed " + event.code; };
// On request, a second socket on a protocol that may compress, to see what is negotiated there.
if (new URLSearchParams(location.search).get("echo")) {
  const echo = new WebSocket(new URLSearchParams(location.search).get("ws"), "echo");
  echo.onopen = () => { window.echoExtensions = echo.extensions; };
}
</script></body></html>
"""


def ws_url(server_url):
    return server_url.replace("http://", "ws://", 1) + "/"


def refused_origins(server_url):
    """The server's count of handshakes refused for their origin."""
    text = urllib.request.urlopen(server_url + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("switchboard_websocket_handshakes_refused_total{") and 'reason="origin"' in line:
            total += float(line.split("}", 1)[1].split()[0])
    return total


def test_a_page_of_another_origin_may_not_open_a_websocket_by_default(server_url, other_origin, browser_factory):
    page = other_origin("other.html", WEBSOCKET_PAGE)
    assert page.split("/")[2] != server_url.split("/")[2], "the page is on another origin"
    before = refused_origins(server_url)
    driver = browser_factory()
    driver.get(f"{page}?ws={ws_url(server_url)}")
    wait_for(driver, lambda d: d.execute_script("return window.wsRecord.closed") is not None, what="the refusal")
    record = driver.execute_script("return window.wsRecord")
    assert record == {"opened": False, "messages": 0, "closed": 1006}, record
    assert refused_origins(server_url) == before + 1, "the server refused it for its origin"
    screenshot(driver, "other-origin-refused")


def test_a_page_of_an_allowed_origin_opens_its_websocket(other_origin, browser_factory):
    page = other_origin("allowed.html", WEBSOCKET_PAGE)
    origin = re.match(r"(http://[^/]+)/", page).group(1)
    with running_server("--allowed-origins", origin) as server_url:
        driver = browser_factory()
        driver.get(f"{page}?ws={ws_url(server_url)}&echo=1")
        wait_for(driver, lambda d: d.execute_script("return window.wsRecord.messages") >= 5, what="counter messages")
        record = driver.execute_script("return window.wsRecord")
        assert record["opened"] and record["closed"] is None, record
        # Chromium offers permessage-deflate on every connection. The server accepts it on
        # protocols that may compress, and never on dumb-increment-protocol (as libwebsockets).
        assert record["extensions"] == "", record
        wait_for(driver, lambda d: d.execute_script("return window.echoExtensions") is not None, what="the echo socket")
        echo_extensions = driver.execute_script("return window.echoExtensions")
        assert echo_extensions.startswith("permessage-deflate"), echo_extensions
        assert refused_origins(server_url) == 0
        screenshot(driver, "other-origin-allowed")
