"""Keeps one source connected: opens it, watches its sockets, pings it when it falls silent,
reconnects with jittered backoff, and says in the log when it was lost and when it is back.
When to do each is decided in ``asyncphp.core.link``.

Opening a source is blocking work (connect, AUTH, INFO, CLIENT ID, a stream's HGET and XGROUP
CREATE, a cluster's CLUSTER SLOTS: a 2 s timeout each against a Redis that accepts and never
answers), so it runs on a thread of its own while the loop goes on answering the pool and the
other sources. The loop touches the source again only once the open is over. So does a cluster's
check that a slot is still served where it is connected (CLUSTER SLOTS, 0.5 s a node)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import redis

from asyncphp.core.link import BACKOFF_CAP, CLUSTER_BACKOFF_CAP, Announce, Health, LinkState
from asyncphp.loop.poller import READ, Poller
from asyncphp.loop.redislink import WHERE_INTERVAL
from asyncphp.redisurl import is_cluster, redact

REPEAT_AFTER = 5.0  # seconds: on a cluster, the same failure to connect said at most this often
OPEN_POLL = 0.01  # seconds between looks at an open running on its thread (only while one runs)
T = TypeVar("T")


class Source(Protocol):
    """What a keeper keeps connected: the pub/sub channels, the streams, the heartbeat."""

    what: str  # "commands", "stream commands (group …)": for log lines
    announce: bool  # log "Subscribed to …" when ready (not for a connection that subscribes to nothing)

    def open(self) -> tuple[str, str]:
        """Connect; returns where, and the server's version, for the log."""

    def watch(self) -> list[tuple[int, Callable[[], None]]]: ...

    @property
    def ready(self) -> bool: ...

    @property
    def last_read(self) -> float: ...

    def ping(self) -> None: ...

    def misplaced(self) -> bool:
        """On a cluster: its key's slot is served by another primary now."""

    def tick(self, now: float, free: int) -> None:
        """Periodic work on the open connection; ``free`` more jobs may be taken (the dispatcher's
        ``readable``: free slots, and read-ahead for quick jobs)."""

    def wake_at(self, free: int) -> float:
        """When :meth:`tick` has work no socket event brings (``inf``: none)."""

    def stop(self) -> None:
        """Stop taking work: the daemon is draining."""

    @property
    def settled(self) -> bool:
        """Once stopping: nothing more will arrive, and nothing it owes Redis is unconfirmed."""

    def leave(self) -> None:
        """The drain is over: say what is left unconfirmed, remove what should not outlive us."""

    def explain(self, reason: str) -> str:
        """``reason`` for a lost connection, with its likely cause when the source knows it."""

    def status(self) -> str:
        """Its part of the STATUS= line ("" for none)."""

    def close(self) -> None: ...


class Keeper:
    def __init__(
        self, source: Source, url: str, poller: Poller, log: logging.Logger, shares: int = 1
    ) -> None:
        """``shares``: how many sources split the pool's room (a cluster's streams, one source per
        slot): this one is offered its part, rounded up, so that together they read about what
        one source over every stream would."""
        self.source = source
        self._shares = shares
        self._cluster = is_cluster(url)
        self.state = LinkState(random.random, CLUSTER_BACKOFF_CAP if self._cluster else BACKOFF_CAP)
        self._next_where = 0.0
        # A cluster's sources retry every second at most (CLUSTER_BACKOFF_CAP): the same failure
        # is said at most every REPEAT_AFTER, as a single server's backoff would say it.
        self._repeat_after = REPEAT_AFTER if self._cluster else 0.0
        self._said, self._said_at, self._unsaid = "", -math.inf, 0
        self._url = url
        self._poller = poller
        self._log = log
        self._fds: list[int] = []
        self._stopping = False
        self._opening: concurrent.futures.Future[tuple[str, str]] | None = None
        self._where: concurrent.futures.Future[bool] | None = None  # a cluster's slot check out

    def turn(self, now: float, health_interval: float, free: int) -> None:
        """One pass of the loop: connect when due, check the connection's health, run the source."""
        if self._opening is not None:
            if not self._opening.done():
                return  # the source is the opener's until it is done
            self._opened(now, self._opening)
        elif self.state.due(now) and self._may_connect:
            self._opening = _in_thread(self.source.open)
            return
        if not self._fds:
            return
        health = self.state.check(now, self.source.last_read, health_interval)
        try:
            if health is Health.PING:
                self.source.ping()
            elif health is Health.LOST:
                self.lost(f"no answer to PING within {health_interval:g} s")
                return
            if self._where is not None and self._where.done():
                misplaced, self._where = self._where.result(), None
                if misplaced:
                    self.lost("the cluster serves its slot from another primary now")
                    return
            if self._cluster and now >= self._next_where and self._where is None:
                self._next_where = now + WHERE_INTERVAL
                self._where = _in_thread(self.source.misplaced)
            self.source.tick(now, -(-free // self._shares))
        except (redis.RedisError, OSError) as exc:
            self.lost(str(exc) or type(exc).__name__)

    def wake_at(self, free: int) -> float:
        if self._opening is not None:
            return time.monotonic() + OPEN_POLL
        if not self._fds:
            return self.state.wake_at() if self._may_connect else math.inf
        return self.source.wake_at(-(-free // self._shares))

    @property
    def _may_connect(self) -> bool:
        # While stopping, only to confirm what is still owed to Redis (a stream's settles).
        return not self._stopping or not self.source.settled

    def _opened(self, now: float, opening: concurrent.futures.Future[tuple[str, str]]) -> None:
        self._opening = None
        try:
            where, version = opening.result()
            watched = self.source.watch()
        except (redis.RedisError, OSError) as exc:
            self.source.close()
            delay = self.state.failed(now)
            said = f"cannot connect to redis at {redact(self._url)}: {_text(exc)}"
            if said == self._said and now - self._said_at < self._repeat_after:
                self._unsaid += 1
                return
            more = f" ({self._unsaid} more times since it was said)" if self._unsaid else ""
            self._log.error("%s; retrying in %.1f s%s", said, delay, more)
            self._said, self._said_at, self._unsaid = said, now, 0
            return
        self._said, self._unsaid = "", 0
        self.state.opened()
        for fd, callback in watched:
            self._poller.watch(fd, READ, self._guard(callback))
            self._fds.append(fd)
        self._log.info("Connected to redis on %s (%s) for %s", where, version, self.source.what)
        self._after_read()

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
                self._log.exception("unexpected %s handling redis (%s)", type(exc).__name__, self.source.what)
                self.lost(f"{type(exc).__name__}: {exc}")
                return
            self._after_read()

        return on_ready

    def _after_read(self) -> None:
        if not self.source.ready:
            return
        said = self.state.ready(time.monotonic())
        if said is Announce.BACK:
            self._log.warning(
                "Resubscribed to %s after a %.1f s redis outage", self.source.what, self.state.outage
            )
        elif said is Announce.FIRST and self.source.announce:
            self._log.info("Subscribed to %s", self.source.what)

    def lost(self, reason: str) -> None:
        # Pub/sub cannot replay what was published while we were away: the outage is logged with
        # its length once we are back, so the gap is visible.
        reason = self.source.explain(reason)
        self.disconnect()
        delay = self.state.failed(time.monotonic())
        again = f"; reconnecting in {delay:.1f} s" if self._may_connect else ""
        self._log.error("lost the connection to redis (%s): %s%s", self.source.what, reason, again)

    def stop(self) -> None:
        """The source stops taking work; reconnecting goes on only while it owes Redis a settle."""
        self._stopping = True
        try:
            self.source.stop()
        except (redis.RedisError, OSError) as exc:
            self.lost(str(exc) or type(exc).__name__)

    @property
    def settled(self) -> bool:
        return self.source.settled

    def leave(self) -> None:
        if self._opening is not None:
            return  # not connected: nothing to remove
        # Stopping anyway: what it would remove also expires on its own.
        with contextlib.suppress(redis.RedisError, OSError):
            self.source.leave()

    def disconnect(self) -> None:
        for fd in self._fds:
            self._poller.forget(fd)
        self._fds.clear()
        self._where = None  # about the connection gone: its answer no longer matters
        if self._opening is not None:
            # The opener still has the source: it closes it when done, and the loop never sees it.
            self._opening.add_done_callback(lambda _: self.source.close())
            self._opening = None
        else:
            self.source.close()


def _in_thread(work: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run ``work`` on a thread of its own. A daemon thread: one stuck in a timeout when the daemon
    exits must not hold the exit up (an executor's threads are joined at exit)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to the loop, which decides what it means
            future.set_exception(exc)

    threading.Thread(target=run, name="asyncphp-open", daemon=True).start()
    return future


def _text(exc: BaseException) -> str:
    """``exc`` for a log line: redis-py leaves the code out of a cluster's redirect (MOVED 1584
    10.0.0.2:6379 reads "1584 10.0.0.2:6379")."""
    if isinstance(
        exc, (redis.exceptions.MovedError, redis.exceptions.AskError, redis.exceptions.TryAgainError)
    ):
        return f"{type(exc).__name__.removesuffix('Error').upper()} {exc}"
    return str(exc)
