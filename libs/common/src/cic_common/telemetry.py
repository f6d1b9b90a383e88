"""OpenTelemetry set-up and W3C trace-context propagation through NATS headers."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

__all__ = ["extract_context", "inject_headers", "setup_tracing", "tracer"]


def setup_tracing(service: str, exporter: str) -> None:
    """Install a tracer provider; ``exporter`` is ``none``, ``console`` or ``otlp``.

    With ``none`` spans are still created (so context propagates) but not exported.
    """
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


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add ``traceparent`` (and ``tracestate``) of the current span to ``headers``."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context carried by a message's headers (empty when none)."""
    return propagate.extract(dict(headers or {}))
