"""The life of one kept Redis connection: when to connect, when to PING, when to call it lost, and
what to say when it is back. Pure: the keeper (``asyncphp.loop.keeper``) does the I/O and the log.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from asyncphp.core.backoff import Backoff

BACKOFF_FIRST = 0.1  # seconds
BACKOFF_CAP = 5.0
# On a cluster, a shard that is failing over is back within its node timeout plus about a second,
# while its other shards answer: each retry only asks a seed for the slot map.
CLUSTER_BACKOFF_CAP = 1.0
# The backoff starts over only for a connection that stayed up this long once ready: one lost as
# soon as it is made (a cluster that answers CLUSTERDOWN while a shard fails over) keeps backing off.
STABLE_AFTER = 1.0


class State(enum.Enum):
    DOWN = "down"  # waiting to (re)connect at connect_at
    UP = "up"  # open; ready once the source says so (subscriptions confirmed)


class Health(enum.Enum):
    FINE = "fine"
    PING = "ping"  # silent for too long: ask for a reply
    LOST = "lost"  # the PING went unanswered: the connection is dead


class Announce(enum.Enum):
    NOTHING = "nothing"
    FIRST = "first"  # ready for the first time: "Subscribed to …"
    BACK = "back"  # ready again after an outage: "Resubscribed to … after N s"


class LinkState:
    def __init__(self, jitter: Callable[[], float], cap: float = BACKOFF_CAP) -> None:
        self.state = State.DOWN
        self.connect_at = 0.0  # meaningful while DOWN
        self.down_since = math.inf  # when it was lost, if it had been ready before; inf otherwise
        self.announced = False  # ready, and said so
        self.outage = 0.0  # seconds the last outage lasted
        self._ever_ready = False
        self._pinged_at = math.inf
        self._ready_at = math.inf
        self._backoff = Backoff(BACKOFF_FIRST, cap, jitter=jitter)

    @property
    def up(self) -> bool:
        return self.state is State.UP

    def due(self, now: float) -> bool:
        """Time to try connecting."""
        return self.state is State.DOWN and now >= self.connect_at

    def wake_at(self) -> float:
        return self.connect_at if self.state is State.DOWN else math.inf

    def opened(self) -> None:
        self.state = State.UP
        self.announced = False
        self._pinged_at = math.inf

    def failed(self, now: float) -> float:
        """Connecting failed, or the connection was lost: the delay before the next try."""
        if self.state is State.UP and self.announced and self.down_since == math.inf:
            self.down_since = now
        if self.state is State.UP and self.announced and now - self._ready_at >= STABLE_AFTER:
            self._backoff.reset()
        self.state = State.DOWN
        delay = self._backoff.next()
        self.connect_at = now + delay
        return delay

    def ready(self, now: float) -> Announce:
        """The source is ready (its subscriptions confirmed): what to announce, once. After
        ``BACK``, :attr:`outage` says how long it was away."""
        if self.announced:
            return Announce.NOTHING
        self.announced = True
        self._ready_at = now
        if self.down_since == math.inf:
            first, self._ever_ready = not self._ever_ready, True
            return Announce.FIRST if first else Announce.NOTHING
        self.outage, self.down_since = now - self.down_since, math.inf
        return Announce.BACK

    def check(self, now: float, last_read: float, interval: float) -> Health:
        """PING a connection silent for ``interval``; lost if that PING gets no reply in as long."""
        if self.state is not State.UP:
            return Health.FINE
        if last_read > self._pinged_at:
            self._pinged_at = math.inf  # it answered
        if self._pinged_at == math.inf:
            if now - last_read > interval:
                self._pinged_at = now
                return Health.PING
            return Health.FINE
        return Health.LOST if now - self._pinged_at > interval else Health.FINE
