"""The operations and audit console: server-rendered pages over the services' public API.

Every page reads and changes things only through `ServiceApi`, as the signed-in caller; the
order page adds what only the stores can tell (each stream's hash chain, the view as of a past
moment) by running the audit tool, and only after the API has shown the caller may see the order.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from operations.audit import audit_order
from operations.catalog import SERVICES
from operations.checkpoint import Checkpoint, CheckpointError, load_public_key, open_documents
from operations.console.api import Answer, ServiceApi
from operations.console.charts import points_history, step_chart
from operations.deadletters import (
    DeadLetterError,
    Filters,
    find,
    list_dead_letters,
    purge,
    redrive,
)
from operations.identities import EXAMPLE_USERS
from operations.sealed import read_latest_seals
from operations.stores import (
    StoreSelectionError,
    close_stores,
    open_service_stores,
    service_store_urls,
)
from shared.contracts.events import TOPICS
from shared.kernel.auth import Caller, InvalidToken, Role
from shared.kernel.clock import SystemClock, utc
from shared.kernel.http import problem_response
from shared.kernel.messaging import make_producer
from shared.kernel.messaging.kafka import client_security
from shared.kernel.settings import Settings

log = logging.getLogger("yellowcart.console")

PREFIX = "/console"
HERE = Path(__file__).parent
PAGE_SIZE = 10
POLL_INTERVAL_MS = 2000
EXAMPLE_TOKEN_TTL = timedelta(hours=12)
SESSION_MAX_AGE_S = 12 * 3600
QUEUE_STATUSES = ("under_review", "approved", "rejected", "closed", "all")
SELLER_REASONS = ("out_of_stock", "cannot_ship")
CHECKPOINT_CACHE_S = 5.0  # the checkpoint topic is read at most this often per gateway


@dataclass(frozen=True)
class SealedCheckpoint:
    """What the order page says about the latest sealed checkpoints: the checkpoint (None when
    there is none or it cannot be trusted) and a sentence for the page."""

    checkpoint: Checkpoint | None
    note: str


def _alarming(audit: dict[str, Any] | None) -> bool:
    """A broken chain or a checkpoint the log no longer extends (the page marks it `bad`)."""
    return audit is not None and not (audit["chain_ok"] and audit["checkpoint_ok"])


def checkpoint_cell(status: str | None, sealed_at: str) -> tuple[str, str]:
    """(css class, text) of one stream's checkpoint status in the audit report."""
    if status is None:
        return "", "no checkpoint"
    if status == "extended":
        return "ok", f"verified: extends the seal of {_when(sealed_at)}"
    if status == "not sealed":
        return "", "not covered yet (written after the latest seal)"
    return "bad", f"broken: {status}"


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def session_secret(settings: Settings) -> str:
    """The session cookie's signing key: `YELLOWCART_CONSOLE_SECRET` when set; in the embedded
    run, derived from the embedded token secret (stable across restarts of `up`); otherwise a
    random key for this process (sessions end when it restarts)."""
    if settings.console_secret:
        return settings.console_secret
    if settings.environment == "embedded":
        return hmac.new(
            settings.token_secret.encode(), b"yellowcart console session", sha256
        ).hexdigest()
    return secrets.token_hex(32)


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class CsrfRefused(Exception):
    """A form arrived without the session's CSRF token."""


@dataclass(frozen=True)
class Session:
    caller: Caller
    token: str
    api: ServiceApi


class Console:
    """The console's state: the gateway it calls, the settings it reads, its templates."""

    def __init__(self, gateway: ASGIApp, settings: Settings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.clock = SystemClock()
        self.verifier = settings.token_verifier()
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.templates.filters["pretty_json"] = lambda value: json.dumps(
            value, indent=2, sort_keys=True, default=str
        )
        self.templates.filters["when"] = _when
        self.templates.globals["checkpoint_cell"] = checkpoint_cell
        self._sealed: tuple[float, SealedCheckpoint] | None = None

    @property
    def embedded(self) -> bool:
        return self.settings.environment == "embedded"

    async def caller_of(self, token: str) -> Caller:
        """The caller a token names, verified as the services verify it (InvalidToken if not)."""
        caller = self.verifier.cached(token)
        if caller is not None:
            return caller
        if self.verifier.may_block:  # a JWKS URL may be fetched: not on the event loop
            return await run_in_threadpool(self.verifier.verify, token)
        return self.verifier.verify(token)

    async def signed_in(self, request: Request) -> Session:
        token = request.session.get("token")
        if not token:
            raise SignInRequired(_here(request))
        try:
            caller = await self.caller_of(token)
        except InvalidToken:
            request.session.pop("token", None)
            raise SignInRequired(_here(request)) from None
        return Session(caller, token, ServiceApi(self.gateway, token))

    def page(
        self,
        request: Request,
        template: str,
        status: int = 200,
        session: Session | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            request=request,
            prefix=PREFIX,
            caller=session.caller if session else None,
            csrf=csrf_token(request),
            flash=request.session.pop("flash", None),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def problem(
        self, request: Request, problem: dict[str, Any], session: Session | None = None
    ) -> Response:
        """A failed call shown to a person as a page, to a program as problem+json; either way
        with the API's status, title and detail."""
        status = int(problem.get("status") or 500)
        title = str(problem.get("title", "Error"))
        detail = str(problem.get("detail", ""))
        if "text/html" in request.headers.get("accept", ""):
            return self.page(
                request, "error.html", status, session, title=title, detail=detail, code=status
            )
        return problem_response(status, title, detail, request.url.path)

    async def sealed_checkpoint(self) -> SealedCheckpoint:
        """The latest checkpoint each service sealed on the checkpoint topic, every signature
        checked (with the configured public key when there is one); read at most every
        `CHECKPOINT_CACHE_S`."""
        now = time.monotonic()
        if self._sealed is not None and now - self._sealed[0] < CHECKPOINT_CACHE_S:
            return self._sealed[1]
        sealed = await self._read_sealed()
        self._sealed = (now, sealed)
        return sealed

    async def _read_sealed(self) -> SealedCheckpoint:
        try:
            seals = await read_latest_seals(
                self.settings.broker_url, security=client_security(self.settings)
            )
        except Exception:  # the broker away must not take the page down
            log.warning("the checkpoint topic could not be read", exc_info=True)
            return SealedCheckpoint(None, "The checkpoint topic could not be read just now.")
        if not seals.documents:
            return SealedCheckpoint(None, "No service has sealed a checkpoint yet.")
        key_path = self.public_key_path()
        try:
            key = load_public_key(key_path) if key_path else None
            checkpoint = open_documents(seals.all_documents(), key, "checkpoint.events")
        except (CheckpointError, OSError) as error:
            return SealedCheckpoint(None, f"The latest sealed checkpoint is not trusted: {error}")
        pinned = (
            "signed with the platform's key"
            if checkpoint.key_pinned
            else ("signature checked with the key inside it only (no public key configured)")
        )
        sealed = ", ".join(
            f"{service} {_when(at)}" for service, at in sorted(checkpoint.sealed_at_of.items())
        )
        return SealedCheckpoint(checkpoint, f"Latest sealed checkpoints: {sealed}; {pinned}.")

    def public_key_path(self) -> Path | None:
        if self.settings.checkpoint_public_key:
            return Path(self.settings.checkpoint_public_key)
        embedded = Path(self.settings.data_dir) / "checkpoint-key.pub.pem"
        return embedded if self.embedded and embedded.exists() else None

    async def audit(
        self, order_id: str, as_of: datetime | None, checkpoint: Checkpoint | None = None
    ) -> dict[str, Any] | None:
        """The audit tool's report on one order (chains, checkpoint status, view as of a
        moment), or None where the stores cannot be read: the page then shows what the API
        gave, never an error."""
        try:
            urls = service_store_urls(self.settings, self.embedded_data_dir())
        except StoreSelectionError:
            return None  # a deployment that names no stores for its gateway
        try:
            stores = await open_service_stores(urls)
            try:
                return await audit_order(stores, order_id, as_of, checkpoint)
            finally:
                await close_stores(stores)
        except Exception:  # a store busy, gone or not its service's must not take the page down
            log.warning(
                "audit of %s failed; the console shows the API's view only", order_id, exc_info=True
            )
            return None

    def embedded_data_dir(self) -> Path | None:
        """Where an embedded run keeps its SQLite stores, unless every store is named."""
        named = all(self.settings.store_urls.get(service) for service in SERVICES)
        return Path(self.settings.data_dir) if self.embedded and not named else None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def checked_form(request: Request) -> FormData:
    """The posted form, if it carries the session's CSRF token (synchronizer token pattern)."""
    form = await request.form()
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise CsrfRefused
    return form


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _when(value: str | datetime | None) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def _safe_next(path: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if path and is_console_path(path.split("?", 1)[0]) and not path.startswith("//"):
        return path
    return PREFIX


def _parse_moment(text: str) -> datetime:
    """An ISO 8601 moment; a `datetime-local` input's value has no zone and is read as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


class SecurityHeaders:
    """No framing, no sniffing, no referrer, and scripts and styles from this app only."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_console(gateway: ASGIApp, settings: Settings) -> ASGIApp:
    """The console as an ASGI app answering every path under `/console`."""
    console = Console(gateway, settings)
    app = FastAPI(title="yellowcart console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_pages(app, console)
    _sign_in_routes(app, console)
    _queue_routes(app, console)
    _order_routes(app, console)
    _seller_routes(app, console)
    _system_routes(app, console)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="yellowcart_console",
        max_age=SESSION_MAX_AGE_S,
        path=PREFIX,
        same_site="strict",
        https_only=False,
    )
    return SecurityHeaders(app)


def _install_error_pages(app: FastAPI, console: Console) -> None:
    async def on_sign_in_required(request: Request, error: Exception) -> Response:
        assert isinstance(error, SignInRequired)
        return RedirectResponse(
            f"{PREFIX}/sign-in?next={quote(error.next_path, safe='')}", status_code=303
        )

    async def on_csrf(request: Request, error: Exception) -> Response:
        return problem_response(
            403,
            "Forbidden",
            "the form did not carry this session's CSRF token; reload the page and try again",
            request.url.path,
        )

    async def on_http(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        title = "Not found" if error.status_code == 404 else str(error.detail)
        detail = f"no console page {request.url.path}" if error.status_code == 404 else title
        return console.problem(
            request, {"status": error.status_code, "title": title, "detail": detail}
        )

    async def on_invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        detail = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()[:5]
        )
        return console.problem(
            request, {"status": 422, "title": "Invalid request", "detail": detail}
        )

    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(CsrfRefused, on_csrf)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)


def _sign_in_routes(app: FastAPI, console: Console) -> None:
    @app.get(PREFIX)
    async def home(request: Request) -> Response:
        session = await console.signed_in(request)
        if session.caller.role is Role.OPERATOR:
            return RedirectResponse(f"{PREFIX}/queue", status_code=303)
        if session.caller.role is Role.SELLER:
            return RedirectResponse(
                f"{PREFIX}/sellers/{quote(session.caller.sub)}", status_code=303
            )
        return RedirectResponse(f"{PREFIX}/orders", status_code=303)

    @app.get(f"{PREFIX}/sign-in")
    async def sign_in_page(request: Request, next: str = PREFIX) -> Response:
        examples = EXAMPLE_USERS if console.embedded else ()
        return console.page(
            request, "sign_in.html", examples=examples, next=_safe_next(next), error=None
        )

    @app.post(f"{PREFIX}/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await checked_form(request)
        next_path = _safe_next(_form_text(form, "next"))
        identity = _form_text(form, "identity")
        token = _form_text(form, "token").removeprefix("Bearer ").strip()
        error = None
        if identity:
            example = {f"{role.value}:{sub}": (role, sub) for role, sub in EXAMPLE_USERS}
            if not console.embedded or identity not in example:
                error = "example identities exist only in the embedded run"
            else:
                role, sub = example[identity]
                token = console.settings.issue_token(
                    sub, role, console.clock.now(), EXAMPLE_TOKEN_TTL
                )
        if not error:
            try:
                await console.caller_of(token)
            except InvalidToken as invalid:
                error = f"this token is not accepted here: {invalid}"
        if error:
            examples = EXAMPLE_USERS if console.embedded else ()
            return console.page(
                request, "sign_in.html", 401, examples=examples, next=next_path, error=error
            )
        request.session.clear()
        request.session["token"] = token
        request.session["csrf"] = secrets.token_urlsafe(32)  # a new session, a new token
        return RedirectResponse(next_path, status_code=303)

    @app.post(f"{PREFIX}/sign-out")
    async def sign_out(request: Request) -> Response:
        await checked_form(request)
        request.session.clear()
        return RedirectResponse(f"{PREFIX}/sign-in", status_code=303)


@dataclass(frozen=True)
class QueuePage:
    filings: list[dict[str, Any]]
    total: int
    page: int
    pages: int


def queue_page(
    filings: list[dict[str, Any]], *, seller: str, reason: str, page: int, size: int = PAGE_SIZE
) -> QueuePage:
    """The filings matching the filters, oldest first, cut to page `page` (clamped to the
    pages there are) of `size`."""
    matching = sorted(
        (
            filing
            for filing in filings
            if (not seller.strip() or filing["seller_id"] == seller.strip())
            and (not reason or filing["reason"] == reason)
        ),
        key=lambda filing: filing["filed_at"],
    )
    pages = max(1, -(-len(matching) // size))
    page = min(max(page, 1), pages)
    return QueuePage(matching[(page - 1) * size : page * size], len(matching), page, pages)


async def _queue_rows(api: ServiceApi, filings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each filing with its order's payment and the buyer's request, as the order view has them."""
    rows = []
    for filing in filings:
        view = await api.get(f"/orders/{quote(filing['order_id'])}")
        order = view.body if view.ok else None
        request = None
        if order:
            requests = order["case"]["requests"]
            matching = [r for r in requests if r["request_id"] == filing.get("request_id")]
            request = (matching or requests[-1:] or [None])[0]
        rows.append({"filing": filing, "order": order, "request": request})
    return rows


def _queue_routes(app: FastAPI, console: Console) -> None:
    @app.get(f"{PREFIX}/queue")
    async def queue(
        request: Request,
        status: str = "under_review",
        seller: str = "",
        reason: str = "",
        page: int = 1,
    ) -> Response:
        session = await console.signed_in(request)
        if status not in QUEUE_STATUSES:
            status = "under_review"
        answer = await session.api.get("/seller-cancellations", status=status)
        if not answer.ok:
            return console.problem(request, answer.problem, session)
        shown = queue_page(answer.body, seller=seller, reason=reason, page=page)
        return console.page(
            request,
            "queue.html",
            session=session,
            rows=await _queue_rows(session.api, shown.filings),
            total=shown.total,
            page=shown.page,
            pages=shown.pages,
            filters={"status": status, "seller": seller, "reason": reason},
            statuses=QUEUE_STATUSES,
            reasons=SELLER_REASONS,
        )

    @app.post(f"{PREFIX}/queue/{{filing_id}}/decision")
    async def decide(request: Request, filing_id: str) -> Response:
        session = await console.signed_in(request)
        form = await checked_form(request)
        decision = _form_text(form, "decision")
        if decision not in ("approve", "reject"):
            return console.problem(
                request,
                {"status": 422, "title": "Invalid request", "detail": "approve or reject"},
                session,
            )
        note = _form_text(form, "note")
        answer = await session.api.post(
            f"/seller-cancellations/{quote(filing_id)}/{decision}", {"note": note or None}
        )
        if not answer.ok:
            return console.problem(request, answer.problem, session)
        order_id = answer.body.get("order_id") or _form_text(form, "order_id")
        verb = "approved" if decision == "approve" else "rejected"
        request.session["flash"] = f"Filing {filing_id} {verb}."
        return RedirectResponse(f"{PREFIX}/orders/{quote(order_id)}", status_code=303)


def _order_routes(app: FastAPI, console: Console) -> None:
    async def order_context(
        request: Request,
        session: Session,
        order_id: str,
        as_of_text: str,
        known_events: int | None = None,
    ) -> dict[str, Any] | Response:
        try:
            as_of = _parse_moment(as_of_text) if as_of_text else None
        except ValueError:
            problem = {
                "status": 422,
                "title": "Invalid request",
                "detail": f"as_of: {as_of_text!r} is not an ISO 8601 moment",
            }
            return console.problem(request, problem, session)
        view = await session.api.get(f"/orders/{quote(order_id)}")
        if not view.ok:
            return console.problem(request, view.problem, session)
        if known_events == len(view.body["timeline"]):
            return Response(status_code=204)  # nothing new: spare the stores the audit
        # the caller may see this order (the API said so): now what only the stores can tell
        sealed = await console.sealed_checkpoint()
        audit = await console.audit(order_id, as_of, sealed.checkpoint)
        timeline = view.body["timeline"]
        for entry in timeline:
            entry["later"] = as_of is not None and utc(datetime.fromisoformat(entry["at"])) > as_of
        return {
            "order": view.body,
            "timeline": timeline,
            "audit": audit,
            "sealed": sealed,
            "as_of": as_of,
            "signature": f"{len(timeline)}:{'bad' if _alarming(audit) else 'ok'}",
            "live_url": f"{PREFIX}/orders/{quote(order_id)}/live",
            "poll_ms": POLL_INTERVAL_MS,
        }

    @app.get(f"{PREFIX}/orders")
    async def find_order(request: Request, order_id: str = "") -> Response:
        session = await console.signed_in(request)
        if order_id.strip():
            return RedirectResponse(f"{PREFIX}/orders/{quote(order_id.strip())}", status_code=303)
        own: list[dict[str, Any]] = []
        if session.caller.role in (Role.BUYER, Role.SELLER):
            answer = await session.api.get("/orders")
            own = answer.body if answer.ok else []
        return console.page(request, "orders.html", session=session, own=own)

    @app.get(f"{PREFIX}/orders/{{order_id}}")
    async def order_page(request: Request, order_id: str, as_of: str = "") -> Response:
        session = await console.signed_in(request)
        context = await order_context(request, session, order_id, as_of)
        if isinstance(context, Response):
            return context
        return console.page(request, "order.html", session=session, **context)

    @app.get(f"{PREFIX}/orders/{{order_id}}/live")
    async def order_live(request: Request, order_id: str, known: int | None = None) -> Response:
        """The part of the order page that changes as events arrive; the page polls it with
        the number of events it shows and gets 204 while there is none new."""
        session = await console.signed_in(request)
        context = await order_context(request, session, order_id, "", known)
        if isinstance(context, Response):
            return context
        return console.page(request, "order_live.html", session=session, **context)


def _seller_routes(app: FastAPI, console: Console) -> None:
    @app.get(f"{PREFIX}/sellers")
    async def find_seller(request: Request, seller_id: str = "") -> Response:
        session = await console.signed_in(request)
        wanted = seller_id.strip() or (
            session.caller.sub if session.caller.role is Role.SELLER else ""
        )
        if wanted:
            return RedirectResponse(f"{PREFIX}/sellers/{quote(wanted)}", status_code=303)
        return console.page(request, "seller_search.html", session=session)

    @app.get(f"{PREFIX}/sellers/{{seller_id}}")
    async def seller_page(request: Request, seller_id: str) -> Response:
        session = await console.signed_in(request)
        answer = await session.api.get(f"/sellers/{quote(seller_id)}/performance")
        if not answer.ok:
            return console.problem(request, answer.problem, session)
        performance = answer.body
        steps = points_history(performance["penalties"], console.clock.now())
        return console.page(
            request,
            "seller.html",
            session=session,
            performance=performance,
            steps=steps,
            chart=step_chart(steps) if steps else None,
        )


def _operators_only(session: Session) -> dict[str, Any] | None:
    """Dead letters carry every service's messages: they are for operators."""
    if session.caller.role is Role.OPERATOR:
        return None
    return {"status": 403, "title": "Forbidden", "detail": "dead letters are for operators"}


def _age(failed_at: str, now: datetime) -> str:
    try:
        seconds = (now - datetime.fromisoformat(failed_at.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return "?"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def _health_details(state: Any) -> dict[str, Any]:
    """What a service's readiness answer reports, flat: its figures, then each check."""
    if not isinstance(state, dict):
        return {"answer": state}
    details = {k: v for k, v in state.items() if k not in ("status", "service", "checks")}
    details.update(state.get("checks") or {})
    return details


def _system_routes(app: FastAPI, console: Console) -> None:
    @app.get(f"{PREFIX}/health")
    async def health(request: Request) -> Response:
        session = await console.signed_in(request)
        answer: Answer = await session.api.get("/health/ready")
        services = answer.body.get("services", {}) if isinstance(answer.body, dict) else {}
        rows = [
            {
                "name": name,
                "ready": isinstance(state, dict) and state.get("status") in ("ok", "ready"),
                "details": _health_details(state),
            }
            for name, state in services.items()
        ]
        return console.page(
            request, "health.html", session=session, rows=rows, overall=answer.status == 200
        )

    @app.get(f"{PREFIX}/dead-letters")
    async def dead_letters(request: Request, group: str = "", done: str = "") -> Response:
        session = await console.signed_in(request)
        forbidden = _operators_only(session)
        if forbidden is not None:
            return console.problem(request, forbidden, session)
        filters = Filters(group=group or None, include_done=bool(done))
        now = console.clock.now()
        try:
            letters = await list_dead_letters(console.settings.broker_url, TOPICS, filters, now)
        except Exception:  # the broker is down: say so on the page, never a 5xx
            log.warning("dead letters could not be read", exc_info=True)
            letters, unreadable = [], True
        else:
            unreadable = False
        rows = [
            {**letter.summary(), "age": _age(letter.failed_at, now)}
            for letter in sorted(letters, key=lambda letter: letter.failed_at)
        ]
        return console.page(
            request,
            "dead_letters.html",
            session=session,
            rows=rows,
            unreadable=unreadable,
            filters={"group": group, "done": bool(done)},
        )

    @app.post(f"{PREFIX}/dead-letters/action")
    async def dead_letter_action(request: Request) -> Response:
        session = await console.signed_in(request)
        form = await checked_form(request)
        forbidden = _operators_only(session)
        if forbidden is not None:
            return console.problem(request, forbidden, session)
        action, letter_id = _form_text(form, "action"), _form_text(form, "letter_id")
        if action not in ("redrive", "purge"):
            invalid = {"status": 422, "title": "Invalid request", "detail": "redrive or purge"}
            return console.problem(request, invalid, session)
        try:
            letter = await find(console.settings.broker_url, letter_id)
            producer = make_producer(console.settings)
            await producer.start()
            try:
                act = redrive if action == "redrive" else purge
                by = f"console:{session.caller.sub}"
                await act(producer, [letter], by=by, clock=console.clock, dry_run=False)
            finally:
                await producer.stop()
        except DeadLetterError as refused:
            conflict = {"status": 409, "title": "Conflict", "detail": str(refused)}
            return console.problem(request, conflict, session)
        verb = "redriven to its group" if action == "redrive" else "purged"
        request.session["flash"] = f"Dead letter {letter_id} {verb}."
        return RedirectResponse(f"{PREFIX}/dead-letters", status_code=303)
