"""OpenTelemetry set-up and W3C trace-context propagation through NATS headers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

__all__ = ["consuming", "extract_context", "inject_headers", "setup_tracing", "tracer"]

_recording = False


def setup_tracing(service: str, exporter: str) -> None:
    """Install a tracer provider; ``exporter`` is ``none``, ``console`` or ``otlp``.

    With ``none`` no span is made at all (at a thousand heartbeats a second, spans
    nobody exports were half the cost of consuming one), but the trace context an
    event arrives with is still passed on to what its handler publishes.
    """
    global _recording
    _recording = exporter != "none"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":  # pragma: no cover - needs a collector
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter != "none":
        raise ValueError(f"unknown CIC_OTEL_EXPORTER {exporter!r}: use none, console or otlp")
    trace.set_tracer_provider(provider)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


@contextmanager
def consuming(
    name: str, headers: Mapping[str, str] | None, event_id: str
) -> Iterator[trace.Span | None]:
    """The span of handling one event, child of the span that published it; None when
    spans are not recorded (then the publisher's context is only made current)."""
    if _recording:
        ctx = extract_context(headers)
        with tracer(__name__).start_as_current_span(name, context=ctx) as span:
            span.set_attribute("cic.event_id", event_id)
            yield span
        return
    if not headers or "traceparent" not in headers:
        yield None
        return
    token = context.attach(extract_context(headers))
    try:
        yield None
    finally:
        context.detach(token)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add ``traceparent`` (and ``tracestate``) of the current span to ``headers``."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context carried by a message's headers (empty when none)."""
    return propagate.extract(dict(headers or {}))
