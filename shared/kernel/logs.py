"""Structured logs with structlog: one JSON object per line, or a console format on a terminal.

`configure_logging` routes every log record of the process — ours, FastStream's, uvicorn's,
aiokafka's, all plain `logging` loggers — through one structlog `ProcessorFormatter` on the
root handler, so each line carries the same fields: time, level, logger, event (the message),
`service` and `instance`, and whatever the current context bound with `bound_context`: the
HTTP request id, and for a consumed event its correlation id (the order id), causation id,
event id and type. Context lives in `contextvars`, so it follows the request or the event
through every `await` and never leaks into another task.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any, Literal
from uuid import uuid4

import structlog
from structlog.contextvars import merge_contextvars
from structlog.typing import Processor

LogFormat = Literal["auto", "json", "console"]
REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # printable ASCII, as the gateway accepts
QUIET_LOGGERS = {
    "aiokafka": logging.WARNING,
    "aiosqlite": logging.INFO,
    "uvicorn.access": logging.WARNING,
}
# Libraries that give their loggers a handler of their own (and stop propagation): FastStream
# writes coloured text to stdout. Theirs are taken away so the root handler formats them.
OWN_HANDLER_LOGGERS = ("faststream", "uvicorn", "uvicorn.error")


_bound: ContextVar[dict[str, Any]] = ContextVar("yellowcart_log_fields", default={})  # noqa: B039


class bound_context:
    """Bind `fields` to every log line written inside the `with` block (this task only).

    One context variable holding a dict, set and reset once per block: cheaper per consumed
    event than structlog's `bound_contextvars` (one variable per field), which matters at
    hundreds of events a second."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self._token: Token[dict[str, Any]] | None = None

    def __enter__(self) -> None:
        outer = _bound.get()
        fields = {k: v for k, v in self._fields.items() if v is not None}
        self._token = _bound.set({**outer, **fields} if outer else fields)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _bound.reset(self._token)


def _merge_bound(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name, value in _bound.get().items():
        event.setdefault(name, value)
    return event


class RequestContext:
    """ASGI middleware: every log line of a request carries its `request_id` (the caller's
    `X-Request-ID` if it sent a well-formed one, as the gateway does, else a new one), which
    the response repeats."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER, b"")
        request_id = sent.decode("ascii") if _REQUEST_ID.fullmatch(sent) else uuid4().hex

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with bound_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted (as logging's last-resort
    handler does), not to the stream it was when configured."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        return None


def configure_logging(
    service: str, instance: str, level: str = "INFO", log_format: LogFormat = "auto"
) -> None:
    """Send every log record of the process through one structlog pipeline on stderr."""
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())

    def identity(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        event.setdefault("instance", instance)
        return event

    shared: list[Processor] = [
        merge_contextvars,
        _merge_bound,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        identity,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
    for name in OWN_HANDLER_LOGGERS:
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
