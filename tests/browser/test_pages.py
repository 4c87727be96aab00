"""The pages, as a person sees them in a real browser."""
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import screenshot


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
