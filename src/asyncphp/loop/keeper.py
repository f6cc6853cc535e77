"""Keeps one source connected: opens it, watches its sockets, pings it when it falls silent,
reconnects with jittered backoff, and says in the log when it was lost and when it is back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import redis

from asyncphp.core.backoff import Backoff
from asyncphp.loop.poller import READ, Poller
from asyncphp.redisurl import redact


class Source(Protocol):
    def open(self) -> tuple[str, str]: ...
    def watch(self) -> list[tuple[int, Callable[[], None]]]: ...
    @property
    def ready(self) -> bool: ...
    @property
    def last_read(self) -> float: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


class Keeper:
    def __init__(
        self, source: Source, what: str, url: str, poller: Poller, log: logging.Logger, *, quiet: bool = False
    ) -> None:
        self._quiet = quiet  # no "Subscribed to" line: for a connection that subscribes to nothing
        self.source = source
        self.what = what  # "commands" or "stream commands", for log lines
        self._url = url
        self._poller = poller
        self._log = log
        self._fds: list[int] = []
        self.connect_at: float | None = 0.0  # when to (re)connect; None while connected or stopping
        self._backoff = Backoff(0.1, 5.0, jitter=True)
        self.down_since: float | None = None  # None unless it was lost after being up
        self.announced = False  # this connection is ready and has been logged
        self.ever_ready = False
        self._pinged_at: float | None = None

    @property
    def connected(self) -> bool:
        return bool(self._fds)

    def connect(self) -> None:
        try:
            where, version = self.source.open()
            watched = self.source.watch()
        except (redis.RedisError, OSError) as exc:
            self.source.close()
            delay = self._backoff.next()
            self.connect_at = time.monotonic() + delay
            self._log.error(
                "cannot connect to redis at %s: %s; retrying in %.1f s", redact(self._url), exc, delay
            )
            return
        self.connect_at, self._pinged_at, self.announced = None, None, False
        for fd, callback in watched:
            self._poller.watch(fd, READ, self._guard(callback))
            self._fds.append(fd)
        self._log.info("Connected to redis on %s (%s) for %s", where, version, self.what)
        self.after_read()

    def _guard(self, callback: Callable[[], None]) -> Callable[[int], None]:
        def on_ready(events: int) -> None:
            if not self._fds:
                return  # lost by an earlier callback of this round
            try:
                callback()
            except (redis.RedisError, OSError) as exc:
                self.lost(str(exc) or type(exc).__name__)
                return
            except Exception as exc:  # a reply of a shape not foreseen: start over, visibly
                self._log.exception("unexpected %s handling redis (%s)", type(exc).__name__, self.what)
                self.lost(f"{type(exc).__name__}: {exc}")
                return
            self.after_read()

        return on_ready

    def after_read(self) -> None:
        if not self.announced and self.source.ready:
            self.announced = True
            self._backoff.reset()
            if self.down_since is not None:
                outage = time.monotonic() - self.down_since
                self.down_since = None
                self._log.warning("Resubscribed to %s after a %.1f s redis outage", self.what, outage)
            else:
                self.ever_ready = True
                if not self._quiet:
                    self._log.info("Subscribed to %s", self.what)

    def lost(self, reason: str) -> None:
        # Pub/sub cannot replay what was published while we were away: the outage is logged with
        # its length once we are back, so the gap is visible.
        self.disconnect()
        now = time.monotonic()
        if self.down_since is None and self.ever_ready:
            self.down_since = now
        delay = self._backoff.next()
        self.connect_at = now + delay
        self._log.error(
            "lost the connection to redis (%s): %s; reconnecting in %.1f s", self.what, reason, delay
        )

    def run(self, step: Callable[[], None]) -> None:
        """Do ``step`` on the connection, if it is up; its failure means the connection is lost."""
        if not self._fds:
            return
        try:
            step()
        except (redis.RedisError, OSError) as exc:
            self.lost(str(exc) or type(exc).__name__)

    def disconnect(self) -> None:
        for fd in self._fds:
            self._poller.forget(fd)
        self._fds.clear()
        self.source.close()

    def check(self, now: float, interval: float) -> None:
        """PING a silent connection; call it lost when the answer does not come within ``interval``."""
        if not self._fds:
            return
        last = self.source.last_read
        if self._pinged_at is not None and last > self._pinged_at:
            self._pinged_at = None  # it answered
        if self._pinged_at is None and now - last > interval:
            try:
                self.source.ping()
            except (redis.RedisError, OSError) as exc:
                self.lost(str(exc))
                return
            self._pinged_at = now
        elif self._pinged_at is not None and now - self._pinged_at > interval:
            self.lost(f"no answer to PING within {interval:g} s")
