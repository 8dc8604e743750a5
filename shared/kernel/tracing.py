"""OpenTelemetry traces from the HTTP request through Kafka to the view, off unless asked for.

Spans: the HTTP request (opentelemetry-instrumentation-fastapi), each store append, each
outbox publish, each consumed event's handler (`process <topic>`), and for a projection's batch
one `view update` span per event. The W3C `traceparent` travels in each Kafka record's headers.
A commit keeps the `traceparent` of the span that stored it (`Commit.trace_context`): the
relay publishes later, in its own task, so its publish span is started as a child of that
stored context and the trace of the request goes on instead of breaking at the outbox.

Why by hand rather than opentelemetry-instrumentation-aiokafka: the relay's sends must carry
the stored context of each commit, not the relay task's, and a consumer's span must cover our
handler (with its retries and DLQ), not the `getmany` call that fetched a whole batch; the
aiokafka instrumentation wraps `send` and `getone`/`getmany` and can do neither. FastStream's
own telemetry middleware makes one span per batch for a batch subscriber, for the same reason
not per event.

Tracing is on when `YELLOWCART_OTLP_ENDPOINT` is set (spans exported over OTLP/HTTP, batched);
off by default, embedded or not. Off, every helper here returns at once: the per-event path
pays one flag test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer

TRACEPARENT = "traceparent"
_state: dict[str, Any] = {"tracer": None, "provider": None}
_NO_SPAN: AbstractContextManager[None] = nullcontext()  # reusable: it holds no state


def install_tracing(provider: Any | None) -> None:
    """Trace with `provider` (an SDK `TracerProvider`) from now on in this process; None
    turns tracing off again. Not the global provider: nothing else is traced by surprise."""
    _state["provider"] = provider
    _state["tracer"] = provider.get_tracer("yellowcart") if provider is not None else None


def configure_tracing(service: str, otlp_endpoint: str) -> None:
    """Export this process's spans to `otlp_endpoint` (OTLP over HTTP), if one is set."""
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    install_tracing(provider)


def tracing_enabled() -> bool:
    return _state["tracer"] is not None


def instrument_app(app: Any) -> None:
    """Server spans for every HTTP request of `app` (when tracing is on)."""
    if not tracing_enabled():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_state["provider"], excluded_urls="/metrics,/health.*"
    )


def span(
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span named `name`, current inside the block; nothing at all when tracing is off."""
    tracer: Tracer | None = _state["tracer"]
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def continued_span(name: str, traceparent: str) -> AbstractContextManager[Span | None]:
    """A producer span in the trace `traceparent` names; nothing when there is none."""
    tracer: Tracer | None = _state["tracer"]
    if tracer is None or not traceparent:
        return _NO_SPAN
    parent = propagate.extract({TRACEPARENT: traceparent})
    return tracer.start_as_current_span(name, context=parent, kind=SpanKind.PRODUCER)


def current_traceparent() -> str:
    """The current span's `traceparent`, to keep with a commit ("" when none is recording)."""
    if _state["tracer"] is None:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def context_of(traceparent: str) -> Context | None:
    if not traceparent:
        return None
    return propagate.extract({TRACEPARENT: traceparent})


def context_from_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Context | None:
    """The trace context a Kafka record carries in its headers, if any."""
    if _state["tracer"] is None:
        return None
    carrier = {
        name: value.decode("utf-8", "replace")
        for name, value in headers or ()
        if value is not None and name in (TRACEPARENT, "tracestate")
    }
    return propagate.extract(carrier) if carrier else None


def trace_headers() -> list[tuple[str, bytes]]:
    """The current context as Kafka headers (`traceparent`, `tracestate`); [] when off."""
    if _state["tracer"] is None:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(name, value.encode("utf-8")) for name, value in carrier.items()]


def record_spans(name: str, parents: Sequence[Context | None], start_ns: int, end_ns: int) -> None:
    """One finished span per parent, each over [start_ns, end_ns]: work done for many traces
    at once (a projection's batch) shown in each of them."""
    tracer: Tracer | None = _state["tracer"]
    if tracer is None:
        return
    for parent in parents:
        one = tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, start_time=start_ns)
        one.end(end_time=end_ns)
