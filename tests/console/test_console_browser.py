"""The console in a real headless Chromium against `yellowcart up`: an operator decides a
filing and watches its consequences arrive; a seller cannot open another shop's order; a form
without its CSRF token is refused. Every page is checked with axe-core and photographed."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from operations.demo.client import Api
from shared.contracts.events import PAYMENT_TOPIC
from shared.kernel.auth import Role
from shared.kernel.settings import Settings
from tests.console.conftest import Browser

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

CONSEQUENCES = ("OrderCancelled", "RefundIssued", "PenaltyApplied")


def paid_order(base_url: str) -> tuple[Api, str]:
    """A buyer's order, paid, once the dispute service too has learnt of the payment (it learns
    it from the events, as eventually as any reader), so its seller may file."""
    api = Api(base_url, Settings(), uuid4().hex[:8])
    placed = api.place("bank_transfer")
    order_id = placed["order_id"]
    api.pay(order_id, placed["total_amount"], f"gw-{order_id}")
    deadline = time.monotonic() + 30
    while True:
        case = api.call("GET", f"/cases/{order_id}", Role.SELLER, ok=(200, 404))
        if case.status_code == 200 and case.json()["order_paid"]:
            return api, order_id
        assert time.monotonic() < deadline, "the dispute service never learnt of the payment"
        time.sleep(0.2)


def paid_order_with_filing(base_url: str) -> tuple[Api, str, str]:
    """A paid order whose seller filed `out_of_stock`: the filing waits for review."""
    api, order_id = paid_order(base_url)
    filing = api.file_cancellation(order_id, "out_of_stock")
    return api, order_id, filing["filing_id"]


def sign_in_as_example(browser: Browser, identity: str) -> None:
    browser.open("/console/sign-in")
    browser.driver.find_element(By.CSS_SELECTOR, f"button[value='{identity}']").click()
    signed_in(browser)


def sign_in_with_token(browser: Browser, token: str) -> None:
    browser.open("/console/sign-in")
    browser.driver.find_element(By.ID, "token").send_keys(token)
    browser.driver.find_element(By.XPATH, "//button[text()='Sign in with this token']").click()
    signed_in(browser)


def signed_in(browser: Browser) -> None:
    WebDriverWait(browser.driver, 15, poll_frequency=0.1).until(
        lambda driver: "/console/sign-in" not in driver.current_url, "sign-in did not complete"
    )


def wait_for_text(browser: Browser, *texts: str, timeout_s: float = 60) -> None:
    WebDriverWait(
        browser.driver,
        timeout_s,
        poll_frequency=0.3,
        ignored_exceptions=(StaleElementReferenceException,),  # the page is being replaced
    ).until(
        lambda _: all(text in browser.text() for text in texts),
        f"the page never showed all of {texts}",
    )


def arrived_at(browser: Browser, url_part: str, timeout_s: float = 15) -> None:
    """Wait for the navigation a click started (the old page's elements go stale)."""
    WebDriverWait(browser.driver, timeout_s, poll_frequency=0.1).until(
        lambda driver: url_part in driver.current_url, f"never reached {url_part}"
    )


def queued_filing(browser: Browser, filing_id: str, timeout_s: float = 30) -> Any:
    """The filing's card on the queue page. The queue is a projection of the dispute events,
    so a filing just made may need a reload or two to appear (as it would for a person)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = browser.driver.find_elements(By.ID, f"filing-{filing_id}")
        if found:
            return found[0].find_element(By.XPATH, "..")
        assert time.monotonic() < deadline, f"filing {filing_id} never reached the queue"
        time.sleep(0.5)
        browser.driver.refresh()


def settled(browser: Browser, quiet_s: float = 2.5, timeout_s: float = 30) -> None:
    """Wait until the live timeline stopped changing (no new event for `quiet_s`), so an
    element found next is not swapped out by the page's next poll."""
    deadline = time.monotonic() + timeout_s
    read = "return document.getElementById('live').dataset.signature;"
    last = browser.driver.execute_script(read)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = browser.driver.execute_script(read)
        if now == last:
            return
        last = now
    pytest.fail("the order page kept changing")


def timeline_types(browser: Browser) -> list[str]:
    return [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, ".timeline .etype")]


def test_operator_approves_a_filing_and_watches_refund_and_penalty_arrive_live(
    browser: Browser,
) -> None:
    api, order_id, filing_id = paid_order_with_filing(browser.base_url)

    browser.open("/console")
    assert browser.driver.current_url.startswith(f"{browser.base_url}/console/sign-in")
    browser.check_page("sign-in")
    sign_in_as_example(browser, "operator:operator-1")
    assert browser.driver.current_url.endswith("/console/queue")

    # the queue, filtered to this run's seller: the filing with its order's payment
    browser.driver.find_element(By.ID, "seller").send_keys(api.seller)
    browser.driver.find_element(By.XPATH, "//button[text()='Filter']").click()
    arrived_at(browser, "seller=")
    card = queued_filing(browser, filing_id)
    assert "out of stock" in card.text and "paid" in card.text and order_id in card.text
    browser.check_page("queue")

    card.find_element(By.NAME, "note").send_keys("stock count confirmed by phone")
    card.find_element(By.CSS_SELECTOR, "button[value='approve']").click()
    arrived_at(browser, f"/console/orders/{order_id}")
    assert f"Filing {filing_id} approved." in browser.text()
    browser.driver.execute_script("window.loadedOnce = true;")

    # the consequences happen in other services after the approval; the page polls them in
    wait_for_text(browser, *CONSEQUENCES)
    settled(browser)
    assert browser.driver.execute_script("return window.loadedOnce === true;"), "no reload"
    types = timeline_types(browser)
    assert types[0] == "OrderPlaced"
    assert types.index("SellerCancelApproved") < types.index("OrderCancelled")
    assert types.index("OrderCancelled") < types.index("RefundIssued")
    assert "Every stream's chain is intact." in browser.text()
    chains = browser.driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert {row.text.split()[0] for row in chains} >= {
        f"order-{order_id}",
        f"payment-{order_id}",
        f"case-{order_id}",
        f"seller-{api.seller}",
    } or len(chains) == 4

    # the services seal their stores every 2 s: once the four streams are sealed, the page
    # (reloaded: a seal is not an event, so the live poll does not bring it) says so
    def checkpoint_cells() -> list[str]:
        cells = browser.driver.find_elements(By.CSS_SELECTOR, "td.checkpoint")
        return [cell.text for cell in cells]

    deadline = time.monotonic() + 30
    while not all(cell.startswith("verified") for cell in checkpoint_cells()):
        assert time.monotonic() < deadline, f"never all sealed: {checkpoint_cells()}"
        time.sleep(1)
        browser.driver.refresh()
    assert len(checkpoint_cells()) == 4
    assert "Latest sealed checkpoints:" in browser.text()

    # each event expands to its JSON
    refund = browser.driver.find_element(
        By.XPATH, "//li[.//span[@class='etype' and text()='RefundIssued']]"
    )
    refund.find_element(By.TAG_NAME, "summary").click()
    assert '"refund_id"' in refund.find_element(By.TAG_NAME, "pre").text
    browser.check_page("order")

    # the state as of the first event: placed, not yet paid
    first = browser.driver.find_element(By.CSS_SELECTOR, ".timeline li:first-child")
    first.find_element(By.TAG_NAME, "summary").click()
    first.find_element(By.LINK_TEXT, "State as of this event").click()
    arrived_at(browser, "as_of=")
    facts = browser.driver.find_element(By.ID, "summary-heading").find_element(By.XPATH, "..")
    assert "State as of" in facts.text and "awaiting payment" in facts.text
    assert "cancelled" not in facts.text.split("Status", 1)[1].split("\n")[1]
    browser.check_page("order-as-of")

    # the seller page: the penalty and its expiry, the chart of active points
    browser.open(f"/console/orders/{order_id}")
    browser.driver.find_element(By.LINK_TEXT, api.seller).click()
    arrived_at(browser, f"/console/sellers/{api.seller}")
    text = browser.text()
    assert "Active points\n3" in text and order_id in text and "out of stock" in text
    assert browser.driver.find_elements(By.CSS_SELECTOR, "svg.chart path.line")
    browser.check_page("seller")

    browser.open("/console/health")
    assert browser.text().count("not ready") == 0 and "Every service is ready." in browser.text()
    browser.check_page("health")
    browser.open("/console/dead-letters")
    assert "yellowcart dlq" in browser.text()
    browser.check_page("dead-letters")


def test_a_seller_cannot_open_another_shops_order(browser: Browser) -> None:
    api, order_id, _ = paid_order_with_filing(browser.base_url)
    settings = Settings()
    other_shop = settings.issue_token(
        "shop-elsewhere", Role.SELLER, datetime.now(UTC), timedelta(hours=1)
    )
    sign_in_with_token(browser, other_shop)
    browser.open(f"/console/orders/{order_id}")
    heading = browser.driver.find_element(By.TAG_NAME, "h1").text
    assert heading == "Not found"
    assert "OrderPlaced" not in browser.text() and api.buyer not in browser.text()
    browser.check_page("order-not-found")

    # the order's own seller, signed in the same way, does see it
    browser.driver.find_element(By.XPATH, "//button[text()='Sign out']").click()
    WebDriverWait(browser.driver, 15).until(lambda driver: "/sign-in" in driver.current_url)
    sign_in_with_token(browser, api.tokens[Role.SELLER])
    browser.open(f"/console/orders/{order_id}")
    assert browser.driver.find_element(By.TAG_NAME, "h1").text == f"Order {order_id}"


def test_a_form_posted_without_its_csrf_token_is_refused(browser: Browser) -> None:
    api, _, filing_id = paid_order_with_filing(browser.base_url)
    sign_in_as_example(browser, "operator:operator-1")
    browser.open(f"/console/queue?seller={api.seller}")
    card = queued_filing(browser, filing_id)
    browser.driver.execute_script("arguments[0].querySelector('input[name=csrf]').remove();", card)
    card.find_element(By.CSS_SELECTOR, "button[value='approve']").click()
    wait_for_text(browser, "Forbidden", "CSRF", timeout_s=15)
    time.sleep(1)  # were it accepted, the decision would be visible well within this
    queue: list[dict[str, Any]] = api.review_queue()
    assert filing_id in {filing["filing_id"] for filing in queue}, "still under review"


def test_the_order_page_shows_new_events_without_a_reload_and_reads_on_a_phone(
    phone: Browser,
) -> None:
    api, order_id = paid_order(phone.base_url)
    sign_in_as_example(phone, "operator:operator-1")
    phone.open(f"/console/orders/{order_id}")
    wait_for_text(phone, "OrderPlaced", "PaymentReceived")
    settled(phone)
    assert "SellerCancelRequested" not in phone.text()
    phone.driver.execute_script("window.loadedOnce = true;")

    api.file_cancellation(order_id, "cannot_ship")  # after the page was loaded
    wait_for_text(phone, "SellerCancelRequested")
    assert phone.driver.execute_script("return window.loadedOnce === true;"), "no reload"
    assert "new event(s)" in phone.driver.find_element(By.ID, "live-status").text

    settled(phone)
    width = phone.driver.execute_script("return document.documentElement.scrollWidth;")
    viewport = phone.driver.execute_script("return window.innerWidth;")
    assert width <= viewport, f"the page scrolls sideways on a phone ({width} > {viewport})"
    phone.check_page("order-phone")


def test_an_operator_purges_a_dead_letter_from_the_console(
    browser: Browser, system_root: Path
) -> None:
    """A malformed record on a topic is dead-lettered by each group consuming it; the page
    lists them with their group and error, and a purge (with its CSRF token) retires one."""
    broker = json.loads((system_root / "var" / "up.json").read_text())["broker"]
    poison = f"not an envelope {uuid4().hex}".encode()

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            await producer.send_and_wait(PAYMENT_TOPIC, poison, key=b"poison")
        finally:
            await producer.stop()

    asyncio.run(send())
    sign_in_as_example(browser, "operator:operator-1")
    deadline = time.monotonic() + 60
    while True:
        browser.open("/console/dead-letters")
        if PAYMENT_TOPIC in browser.text() and "Purge" in browser.text():
            break
        assert time.monotonic() < deadline, browser.text()
        time.sleep(1)
    browser.check_page("dead-letters-listed")
    listed = browser.text().count("Purge")
    group = browser.driver.find_element(By.CSS_SELECTOR, "tbody tr td:nth-child(2)").text
    browser.driver.find_element(By.CSS_SELECTOR, "button[value=purge]").click()
    wait_for_text(browser, "purged")
    browser.open("/console/dead-letters")
    assert browser.text().count("Purge") == listed - 1, "one letter retired, the others kept"
    browser.open(f"/console/dead-letters?group={group}&done=1")
    assert "purged" in browser.text(), "a purged letter is still shown with its state"
