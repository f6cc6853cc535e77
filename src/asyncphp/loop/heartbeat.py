"""This daemon's counters in Redis, for ``asyncphp status`` on any host.

Every ``interval`` seconds a hash at ``asyncphp:daemon:<name>`` is rewritten and set to expire
after three intervals: a daemon that dies disappears on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from asyncphp.loop.redislink import Link, ignore  # an error only costs a row in asyncphp status
from asyncphp.redisurl import Target
from asyncphp.wire import keys


class Heartbeat:
    """A source with nothing to receive: kept connected like the others (see ``keeper``)."""

    what = "heartbeats"
    announce = False
    settled = True

    def __init__(
        self,
        target: Target,
        name: str,
        interval: float,
        snapshot: Callable[[], Mapping[str, str | int | float]],
    ) -> None:
        self.key = keys.daemon(name)
        self.interval = interval
        self._snapshot = snapshot
        self.link = Link(target, route=self.key)
        self._next = 0.0

    def open(self) -> tuple[str, str]:
        where = self.link.open()
        self.link.start()
        self._next = 0.0
        return where

    def watch(self) -> list[tuple[int, Callable[[], None]]]:
        return [(self.link.fileno(), self.link.drain)]

    @property
    def ready(self) -> bool:
        return True

    @property
    def last_read(self) -> float:
        return self.link.last_read

    def ping(self) -> None:
        self.link.send("PING", on_reply=ignore)

    def misplaced(self) -> bool:
        return self.link.misplaced()

    def tick(self, now: float, free: int) -> None:
        if now < self._next:
            return
        self._next = now + self.interval
        fields: list[str | bytes | int] = []
        for name, value in self._snapshot().items():
            fields += [name, f"{value:.3f}" if isinstance(value, float) else value]
        self.link.send("HSET", self.key, *fields, on_reply=ignore)
        self.link.send("PEXPIRE", self.key, int(self.interval * 3000), on_reply=ignore)

    def wake_at(self, free: int) -> float:
        return self._next

    def stop(self) -> None:
        pass

    def explain(self, reason: str) -> str:
        return reason

    def status(self) -> str:
        return ""

    def leave(self) -> None:
        """At a clean stop: do not wait for the key to expire."""
        self.link.send("DEL", self.key, on_reply=ignore)

    def close(self) -> None:
        self.link.close()


class LastError(logging.Handler):
    """Remembers the last ERROR line, for the heartbeat."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""
        self.at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self.text = record.getMessage()[:300]
        self.at = time.time()
