"""A span per job, as a child of the publisher's, and the context the worker continues from.

Chosen once from the settings, like the metrics: :class:`Tracing` does nothing but pass the
publisher's trace context on to the worker; :class:`OtelTracing` (``traces = true``, the otel
extra) opens a span per attempt when the job is accepted, notes its dispatch, and ends it with
its outcome; the worker then continues from the daemon's span, so a trace reads publisher →
asyncphp → worker. The exporter is what the standard ``OTEL_*`` variables say; under
``opentelemetry-instrument``, its own set-up is used.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import Any

from asyncphp.core.jobs import Job, Outcome, Result
from asyncphp.version import __version__
from asyncphp.wire.meta import Meta


class TracingUnavailable(RuntimeError):
    """traces = true, and the OpenTelemetry SDK (the otel extra) is not installed."""


class Tracing:
    """Traces off: the publisher's context goes to the worker as it came."""

    def begin(self, job: Job) -> None:
        pass

    def dispatch(self, job: Job) -> Meta:
        """The job is handed to the pool: what the worker gets, its trace context included."""
        return job.meta

    def end(self, job: Job, result: Result) -> None:
        pass

    def close(self) -> None:
        pass


class OtelTracing(Tracing):
    def __init__(self, log: logging.Logger) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise TracingUnavailable(
                "traces = true needs OpenTelemetry: pip install 'asyncphp[otel]' (opentelemetry-api and -sdk)"
            ) from None
        self._trace: Any = trace
        self._propagator = TraceContextTextMapPropagator()
        provider = trace.get_tracer_provider()
        self._own: Any = None
        if isinstance(provider, trace.ProxyTracerProvider):  # nobody set one up: do it from OTEL_*
            provider = self._own = _provider_from_environment(log)
            trace.set_tracer_provider(provider)
        self._tracer: Any = provider.get_tracer("asyncphp", __version__)
        self._spans: dict[int, tuple[Any, str, str]] = {}  # job id → span, the worker's context

    def begin(self, job: Job) -> None:
        meta = job.meta
        carrier = {"traceparent": meta.traceparent, "tracestate": meta.tracestate} if meta.traceparent else {}
        attributes: dict[str, str | int] = {
            "messaging.system": "redis", "messaging.destination.name": job.channel,
            "asyncphp.request_id": job.id, "asyncphp.attempt": job.attempt,
        }  # fmt: skip
        if job.message_id:
            attributes["messaging.message.id"] = job.message_id
        if job.release:
            attributes["asyncphp.release"] = job.release
        span = self._tracer.start_span(
            f"asyncphp {job.channel}", context=self._propagator.extract(carrier),
            kind=self._trace.SpanKind.CONSUMER, attributes=attributes,
        )  # fmt: skip
        worker: dict[str, str] = {}
        self._propagator.inject(worker, context=self._trace.set_span_in_context(span))
        self._spans[job.id] = (span, worker.get("traceparent", ""), worker.get("tracestate", ""))

    def dispatch(self, job: Job) -> Meta:
        held = self._spans.get(job.id)
        if held is None:
            return job.meta
        held[0].add_event("dispatched", {"asyncphp.attempt": job.attempt})
        return job.meta.traced(held[1], held[2])

    def end(self, job: Job, result: Result) -> None:
        held = self._spans.pop(job.id, None)
        if held is None:
            return
        span = held[0]
        span.set_attribute("asyncphp.outcome", result.outcome.value)
        if result.status:
            span.set_attribute("http.response.status_code", result.status)
        if result.outcome is not Outcome.COMPLETED:
            span.set_status(
                self._trace.Status(self._trace.StatusCode.ERROR, result.reason or result.outcome.value)
            )
        span.end()

    def close(self) -> None:
        for span, _, _ in self._spans.values():
            span.end()
        self._spans.clear()
        if self._own is not None:
            self._own.shutdown()  # what the batch processors hold is exported now


def _provider_from_environment(log: logging.Logger) -> Any:
    """A TracerProvider with the exporters OTEL_TRACES_EXPORTER names (default otlp), as the SDK's
    own auto-configuration finds them: by their entry points."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingUnavailable(
            "traces = true needs the OpenTelemetry SDK: pip install 'asyncphp[otel]'"
        ) from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "asyncphp-daemon")})
    provider = TracerProvider(resource=resource)
    for name in filter(None, os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")):
        name = name.strip()
        if name == "none":
            continue
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            log.error(
                "traces: exporter %r (OTEL_TRACES_EXPORTER) is not installed; spans are not exported there "
                "(for otlp: pip install opentelemetry-exporter-otlp)", name,
            )  # fmt: skip
            continue
        provider.add_span_processor(BatchSpanProcessor(next(iter(found)).load()()))
    return provider
