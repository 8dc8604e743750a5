"""The console over plain HTTP against `yellowcart up` (no browser needed): the session cookie's
flags, CSRF refusals, sign-in failures, redirects kept inside the console, roles enforced by the
API the console calls."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from operations.demo.client import Api
from shared.kernel.auth import Role, mint_token
from shared.kernel.settings import Settings
from tests.integration.test_checkpoints import rewrite_and_rehash

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

HTML = {"Accept": "text/html"}


@pytest.fixture
def client(system: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system, timeout=15, follow_redirects=False) as http:
        yield http


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/console/sign-in", headers=HTML)
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def token_for(role: Role, sub: str) -> str:
    return Settings().issue_token(sub, role, datetime.now(UTC), timedelta(hours=1))


def sign_in(client: httpx.Client, token: str, next_path: str = "/console") -> httpx.Response:
    csrf = csrf_of(client)
    return client.post(
        "/console/sign-in", data={"csrf": csrf, "token": token, "next": next_path}, headers=HTML
    )


def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_console(
    client: httpx.Client,
) -> None:
    cookie = client.get("/console/sign-in").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_with_a_problem(
    client: httpx.Client,
) -> None:
    operator = token_for(Role.OPERATOR, "operator-http")
    csrf_of(client)  # a session exists, with its token
    for data in ({"token": operator}, {"token": operator, "csrf": "forged"}):
        answer = client.post("/console/sign-in", data=data)
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
        assert "CSRF" in answer.json()["detail"]
    assert client.get("/console/queue").status_code == 303, "still signed out"


def test_a_tampered_session_cookie_counts_as_no_session(client: httpx.Client) -> None:
    assert sign_in(client, token_for(Role.OPERATOR, "operator-http")).status_code == 303
    assert client.get("/console/queue").status_code == 200
    value = client.cookies["yellowcart_console"]
    client.cookies.set("yellowcart_console", value[:-3] + "AAA", path="/console")
    answer = client.get("/console/queue")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


def test_a_bad_token_is_refused_and_signs_nobody_in(client: httpx.Client) -> None:
    forged = mint_token(
        "not-the-platforms-secret-" * 2,
        "mallory",
        Role.OPERATOR,
        datetime.now(UTC),
        timedelta(hours=1),
        rules=Settings().token_rules(),
    )
    answer = sign_in(client, forged)
    assert answer.status_code == 401 and "not accepted" in answer.text
    assert client.get("/console/queue").status_code == 303


def test_sign_in_redirects_only_inside_the_console(client: httpx.Client) -> None:
    token = token_for(Role.OPERATOR, "operator-http")
    for outside in ("https://elsewhere.example/", "//elsewhere.example/console", "/docs"):
        assert sign_in(client, token, outside).headers["location"] == "/console"
    assert sign_in(client, token, "/console/health").headers["location"] == "/console/health"


def test_a_buyer_is_refused_the_review_queue_by_the_api(client: httpx.Client) -> None:
    sign_in(client, token_for(Role.BUYER, "buyer-http"))
    page = client.get("/console/queue", headers=HTML)
    assert page.status_code == 403 and "<h1>Forbidden</h1>" in page.text
    program = client.get("/console/queue", headers={"Accept": "application/json"})
    assert program.status_code == 403
    assert program.headers["content-type"] == "application/problem+json"


def test_an_unknown_console_page_is_a_404_problem(client: httpx.Client) -> None:
    answer = client.get("/console/nowhere")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get("/console/static/console.css").status_code == 200


def test_the_live_fragment_answers_204_while_the_timeline_has_nothing_new(
    client: httpx.Client, system: str
) -> None:
    api = Api(system, Settings(), uuid4().hex[:8])
    order_id = api.place("bank_transfer")["order_id"]
    # an unpaid order's three events (placed, payment requested, counted for the seller); no
    # more come within the hour-long payment window
    api.wait_for(order_id, lambda view: len(view["timeline"]) == 3, "three events")
    sign_in(client, token_for(Role.OPERATOR, "operator-http"))
    live = f"/console/orders/{order_id}/live"
    fragment = client.get(live, params={"known": 0}, headers=HTML)
    assert fragment.status_code == 200 and fragment.text.count('<li class="event') == 3
    assert client.get(live, params={"known": 3}, headers=HTML).status_code == 204
    assert client.get(live, params={"known": 2}, headers=HTML).status_code == 200


def test_the_state_as_of_a_moment_before_the_order_is_empty_and_a_bad_moment_is_422(
    client: httpx.Client, system: str
) -> None:
    api = Api(system, Settings(), uuid4().hex[:8])
    order_id = api.place("bank_transfer")["order_id"]
    sign_in(client, token_for(Role.OPERATOR, "operator-http"))
    page = f"/console/orders/{order_id}"
    before = client.get(page, params={"as_of": "2000-01-01T00:00:00Z"}, headers=HTML)
    assert before.status_code == 200
    assert "Nothing had happened to this order yet" in before.text
    now = client.get(page, params={"as_of": datetime.now(UTC).isoformat()}, headers=HTML)
    assert "Nothing had happened" not in now.text and "awaiting payment" in now.text
    bad = client.get(page, params={"as_of": "yesterday"})
    assert bad.status_code == 422 and "as_of" in bad.json()["detail"]


def checkpoint_cell_of(page: str, stream: str) -> str:
    """The checkpoint column of the stream's row in the order page's chain table."""
    row = re.search(rf"<code>{stream}</code>.*?</tr>", page, re.DOTALL)
    assert row, f"no row for {stream}"
    cell = re.search(r'<td class="checkpoint[^"]*">([^<]*)</td>', row.group(0))
    assert cell, row.group(0)
    return html.unescape(cell.group(0))


def test_the_order_page_shows_streams_verified_against_the_latest_seal_and_a_rewrite_as_broken(
    client: httpx.Client, system: str, system_root: Path
) -> None:
    """`up --demo-windows` seals every 2 s; the rewrite is the attacker's: an event edited and
    every later hash of its stream recomputed in the live store, so the chain is intact."""
    api = Api(system, Settings(), uuid4().hex[:8])
    order_id = api.place("bank_transfer")["order_id"]
    api.wait_for(order_id, lambda view: len(view["timeline"]) == 3, "three events")
    sign_in(client, token_for(Role.OPERATOR, "operator-http"))
    page, stream = f"/console/orders/{order_id}", f"order-{order_id}"
    deadline = time.monotonic() + 30
    while "verified" not in checkpoint_cell_of(client.get(page, headers=HTML).text, stream):
        assert time.monotonic() < deadline, "the order's stream was never sealed"
        time.sleep(0.5)
    shown = html.unescape(client.get(page, headers=HTML).text)
    assert "Latest sealed checkpoints:" in shown and "signed with the platform's key" in shown

    version = rewrite_and_rehash(
        system_root / "var" / "order.db", stream, '"quantity":2', '"quantity":1'
    )
    shown = html.unescape(client.get(page, headers=HTML).text)
    cell = checkpoint_cell_of(shown, stream)
    assert 'class="checkpoint bad"' in cell and f"{stream} v{version}" in cell, cell
    assert "no longer extends it" in shown
    row = re.search(rf"<code>{stream}</code>.*?</tr>", shown, re.DOTALL)
    assert row and ">intact<" in row.group(0)  # the chain alone sees nothing
