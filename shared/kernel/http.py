"""The HTTP edge every service shares: RFC 9457 problem details, auth, body limits, health.

Domain errors become problem details here and only here; each service adds its own routers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.kernel.aggregate import DomainError
from shared.kernel.auth import Caller, InvalidToken, Role, TokenVerifier
from shared.kernel.eventstore.port import ConcurrencyConflict, StoreUnavailable
from shared.kernel.fields import IDENTIFIER

PROBLEM_JSON = "application/problem+json"

_STATUS_OF_KIND = {"invalid": 422, "conflict": 409, "not_found": 404, "forbidden": 403}


class RequestBody(BaseModel):
    """Base of every request body: unknown fields are refused, so nobody sets a status or a
    price from outside."""

    model_config = ConfigDict(extra="forbid")


BodyModel = TypeVar("BodyModel", bound=BaseModel)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field("about:blank", examples=["https://yellowcart.dev/problems/conflict"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="field errors of a bad request")
    extra: dict[str, Any] | None = Field(None, description="machine-readable details")


class HTTPProblem(HTTPException):
    """A problem raised at the edge. It is a FastAPI HTTPException so that FastAPI re-raises it
    when it comes out of reading the body (BodySizeLimit on a streamed body) instead of turning
    it into a 400 "error parsing the body"; its own handler still renders it."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(status, detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra


def problem_response(
    status: int,
    title: str,
    detail: str,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    slug = title.lower().replace(" ", "-")
    body = Problem(
        type=f"https://yellowcart.dev/problems/{slug}",
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
        extra=dict(extra) if extra else None,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return invalid_request(field_errors(list(error.errors())), str(request.url.path))

    async def on_domain(request: Request, error: Exception) -> Response:
        assert isinstance(error, DomainError)
        status = _STATUS_OF_KIND.get(error.kind, 409)
        title = {409: "Conflict", 422: "Invalid request", 404: "Not found", 403: "Forbidden"}
        return problem_response(
            status, title[status], error.message, str(request.url.path), extra=error.details
        )

    async def on_http_problem(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPProblem)
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        extra = dict(error.extra)
        errors = extra.pop("errors", None)
        return problem_response(
            error.status,
            error.title,
            error.detail,
            str(request.url.path),
            errors=errors,
            extra=extra or None,
            headers=headers,
        )

    async def on_starlette(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        return problem_response(
            error.status_code, str(error.detail), str(error.detail), str(request.url.path)
        )

    async def on_conflict(request: Request, error: Exception) -> Response:
        return problem_response(
            409,
            "Conflict",
            "the order changed while this request was handled; reload and try again",
            str(request.url.path),
        )

    async def on_unavailable(request: Request, error: Exception) -> Response:
        return problem_response(
            503,
            "Service unavailable",
            "the database is unavailable; nothing was stored, retry later",
            str(request.url.path),
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(HTTPProblem, on_http_problem)
    app.add_exception_handler(StarletteHTTPException, on_starlette)
    app.add_exception_handler(ConcurrencyConflict, on_conflict)
    app.add_exception_handler(StoreUnavailable, on_unavailable)


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, counting what actually arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPProblem(413, "Payload too large", self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"request body is larger than the {self.max_bytes}-byte limit"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, "Payload too large", self._detail(), scope.get("path"))
        await response(scope, receive, send)


_bearer = HTTPBearer(auto_error=False, description="JWT with `sub` and `role`")


async def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The bearer token resolved into a Caller (rules from the app's settings), or 401."""
    if credentials is None:
        raise HTTPProblem(401, "Unauthorized", "a bearer token is required")
    token = credentials.credentials
    verifier: TokenVerifier | None = getattr(request.app.state, "token_verifier", None)
    if verifier is None:
        verifier = request.app.state.token_verifier = request.app.state.settings.token_verifier()
    try:
        caller = verifier.cached(token)
        if caller is not None:
            return caller
        if verifier.may_block:  # a JWKS URL may be fetched: not on the event loop
            return await run_in_threadpool(verifier.verify, token)
        return verifier.verify(token)
    except InvalidToken as error:
        raise HTTPProblem(401, "Unauthorized", f"invalid token: {error}") from None


CallerDep = Annotated[Caller, Depends(current_caller)]


def require_role(caller: Caller, *roles: Role) -> None:
    if caller.role not in roles:
        allowed = ", ".join(role.value for role in roles)
        article = "an" if caller.role.value[0] in "aeiou" else "a"
        raise HTTPProblem(
            403,
            "Forbidden",
            f"this route is for the {allowed} role; you are signed in as {article} "
            f"{caller.role.value}",
        )


def field_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as problem-details field errors: where, and what is wrong."""
    return [
        {"location": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        for item in errors
    ]


def invalid_request(errors: list[dict[str, Any]], instance: str | None = None) -> JSONResponse:
    summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
    return problem_response(422, "Invalid request", summary, instance, errors=errors)


def parse_body(model: type[BodyModel], body: bytes) -> BodyModel:
    """A raw body (read for its signature first) parsed into `model`, or 422 naming the field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        errors = field_errors([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])
        summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
        raise HTTPProblem(422, "Invalid request", summary, errors=errors) from None


PathId = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=IDENTIFIER, description="letters, digits, `._:@-`"),
]
"""An id in a path: anything else is 422 before a handler runs."""


# The schema sits under application/problem+json, the media type errors are sent with; a
# `model` here would document it under application/json instead, which no error uses.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}},
        "description": text,
    }
    for status, text in {
        401: "missing or invalid bearer token",
        403: "the caller's role may not use this route",
        404: "no such resource visible to the caller",
        409: "the resource's state does not allow this",
        413: "request body too large",
        422: "the request does not fit the schema or a rule",
        503: "storage unavailable; nothing was stored",
    }.items()
}
