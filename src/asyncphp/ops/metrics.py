"""The daemon's metrics, chosen once from the settings: :class:`Metrics` does nothing (the
default: no call site asks whether metrics are on), ``serve()`` returns one that Prometheus
scrapes. prometheus_client is imported only then."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from asyncphp.core.jobs import Outcome


class MetricsUnavailable(Exception):
    """The metrics cannot be served where the settings say (the address is in use, say)."""


class Metrics:
    """Metrics that are off: every method does nothing."""

    def start(self) -> None:
        """Serve them, once everything they read exists.

        Raises:
            MetricsUnavailable: the address cannot be listened on.
        """

    def received(self, source: str) -> None:
        pass

    def rejected(self, source: str) -> None:
        pass

    def dispatched(self, source: str) -> None:
        pass

    def retried(self, source: str) -> None:
        pass

    def ended(self, source: str, outcome: Outcome, seconds: float) -> None:
        pass

    def dead_lettered(self, source: str) -> None:
        pass

    def spilled(self, source: str) -> None:
        pass

    def known(self, sources: Sequence[str]) -> None:
        """The channels and streams read: their series exist from the start, at 0, so that the
        first event of each is seen by rate() and increase()."""

    def stream(self, source: str, lag: int, pending: int) -> None:
        """A stream's group, as XINFO GROUPS said it (every second): entries not yet delivered
        to it, and delivered but not yet acknowledged."""

    def close(self) -> None:
        pass


def serve(
    listen: str,
    in_flight: Callable[[], float],
    queued: Callable[[], float],
    width: Callable[[], float],
    redis_up: Callable[[], float],
) -> Metrics:
    """Metrics served on ``listen`` (host:port); "" means off. ``width``: max_in_flight, which a
    SIGHUP may change; ``redis_up``: 1 while every connection to Redis is up."""
    if not listen:
        return Metrics()
    from asyncphp.ops.prometheus import PrometheusMetrics

    return PrometheusMetrics(listen, in_flight, queued, width, redis_up)
