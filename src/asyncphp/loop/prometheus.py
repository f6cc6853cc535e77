"""Prometheus metrics, served in the text exposition format by prometheus_client from a thread
of its own (``metrics_listen``, off by default). The event loop only increments counters."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)

from asyncphp.core.jobs import Outcome
from asyncphp.loop.metrics import Gauges, Metrics, MetricsUnavailable
from asyncphp.version import __version__

# Dispatch to complete answer: from a fast job (milliseconds) to the pool's request_terminate_timeout.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class PrometheusMetrics(Metrics):
    def __init__(self, listen: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        label = ["source"]  # the channel or stream
        self._received = Counter("asyncphp_messages_received", "Messages received", label, registry=r)
        self._rejected = Counter(
            "asyncphp_messages_rejected", "Messages that could not become a job", label, registry=r
        )
        self._dispatched = Counter(
            "asyncphp_jobs_dispatched",
            "Deliveries handed to the pool (a stream entry delivered again counts again; the daemon's own "
            "retry of a request the pool could not take does not)", label, registry=r,
        )  # fmt: skip
        self._retried = Counter(
            "asyncphp_jobs_retried", "Attempts the pool could not take, tried again", label, registry=r
        )
        self._outcomes = Counter(
            "asyncphp_jobs_ended", "Jobs by how they ended", [*label, "outcome"], registry=r
        )
        self._dead = Counter(
            "asyncphp_jobs_dead_lettered", "Stream entries copied to <stream>:dead", label, registry=r
        )
        self._spilled = Counter(
            "asyncphp_messages_spilled", "Pub/sub messages written to the spill file", label, registry=r
        )
        self._duration = Histogram(
            "asyncphp_job_duration_seconds", "From dispatch to the pool's complete answer", label,
            buckets=BUCKETS, registry=r,
        )  # fmt: skip
        Info("asyncphp_build", "The daemon's version", registry=r).info({"version": __version__})
        ProcessCollector(registry=r)  # start time, CPU, memory: restarts show
        self._lag = Gauge(
            "asyncphp_stream_lag", "Entries of the stream not yet delivered to the group", label, registry=r
        )
        self._pending = Gauge(
            "asyncphp_stream_pending", "Entries delivered to the group and not yet acknowledged", label,
            registry=r,
        )  # fmt: skip
        self._listen = listen
        self.server: WSGIServer | None = None

    def start(self, gauges: Gauges) -> None:
        Gauge("asyncphp_jobs_in_flight", "Requests open to the pool", registry=self.registry).set_function(
            gauges.in_flight
        )
        Gauge(
            "asyncphp_jobs_queued", "Jobs waiting for a free request slot", registry=self.registry
        ).set_function(gauges.queued)
        Gauge("asyncphp_max_in_flight", "Requests it may open at once", registry=self.registry).set_function(
            gauges.width
        )
        Gauge(
            "asyncphp_redis_up", "1 while every connection to Redis is up, 0 while one is being made again",
            registry=self.registry,
        ).set_function(gauges.redis_up)  # fmt: skip
        host, _, port = self._listen.rpartition(":")
        try:
            self.server, _ = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        except OSError as exc:
            raise MetricsUnavailable(f"metrics_listen {self._listen}: {exc.strerror or exc}") from None

    def received(self, source: str) -> None:
        self._received.labels(source).inc()

    def rejected(self, source: str) -> None:
        self._rejected.labels(source).inc()

    def dispatched(self, source: str) -> None:
        self._dispatched.labels(source).inc()

    def retried(self, source: str) -> None:
        self._retried.labels(source).inc()

    def ended(self, source: str, outcome: Outcome, seconds: float) -> None:
        self._outcomes.labels(source, outcome.value).inc()
        if seconds >= 0:
            self._duration.labels(source).observe(seconds)

    def dead_lettered(self, source: str) -> None:
        self._dead.labels(source).inc()

    def spilled(self, source: str) -> None:
        self._spilled.labels(source).inc()

    def known(self, sources: Sequence[str]) -> None:
        for source in sources:
            for counter in (self._received, self._rejected, self._dispatched, self._retried, self._dead,
                            self._spilled):  # fmt: skip
                counter.labels(source)
            for outcome in Outcome:
                self._outcomes.labels(source, outcome.value)

    def stream(self, source: str, lag: int, pending: int) -> None:
        if lag >= 0:
            self._lag.labels(source).set(lag)
        else:
            # Redis cannot tell now (after an XDEL, say): no series rather than a stale one.
            with contextlib.suppress(KeyError):
                self._lag.remove(source)
        self._pending.labels(source).set(pending)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
