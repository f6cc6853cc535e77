"""What the loop reports, and the metrics that are off: :class:`Metrics` does nothing (the default:
no call site asks whether metrics are on). The assembly (``asyncphp.loop.factory``) puts the one
Prometheus scrapes in its place when ``metrics_listen`` is set, and imports prometheus_client
only then."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asyncphp.core.jobs import Outcome


class MetricsUnavailable(Exception):
    """The metrics cannot be served where the settings say (the address is in use, say)."""


@dataclass(frozen=True, slots=True)
class Gauges:
    """What a scrape reads from the loop, from the metrics' own thread: reads, nothing more."""

    in_flight: Callable[[], float]
    queued: Callable[[], float]
    width: Callable[[], float]  # max_in_flight, which a SIGHUP may change
    redis_up: Callable[[], float]  # 1 while every connection to Redis is up


class Metrics:
    """Metrics that are off: every method does nothing."""

    def start(self, gauges: Gauges) -> None:
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
