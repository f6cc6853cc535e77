"""The daemon's loop: Redis messages in, FastCGI requests out, one event loop, never waiting on a worker.

    source (Redis) ─▶ JSON ─▶ form body ─▶ FastCGI request ─▶ dispatcher ─▶ pool ─▶ log line
                                                                   └─ no room: spill file (pub/sub)

One thread, one poller: the Redis sockets, the pool connections and a signal wakeup socket are
all watched together, and the loop's bounded wait also gives periodic work its rhythm (backoff
ends, Redis health pings, the STATUS line, watchdog pings). Signal handlers only record; the loop
acts.

What it runs is built from the settings by ``asyncphp.loop.factory``; which script a job runs is
``asyncphp.loop.releases``'s to say. This module is the loop, admission, the spill replay, the
drain and the status, with its parts given (so tests give their own) and its clock too.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from asyncphp.core.admission import Limits as PoolLimits
from asyncphp.core.jobs import Counters, Job, Message, Outcome, Result
from asyncphp.logfmt import preview
from asyncphp.loop.heartbeat import LastError
from asyncphp.loop.logsink import Sink
from asyncphp.loop.metrics import Gauges, Metrics
from asyncphp.loop.overflow import Overflow
from asyncphp.loop.poller import READ, Callback
from asyncphp.loop.releases import Placed, Routes
from asyncphp.loop.service import Notifier, SignalWakeup
from asyncphp.loop.story import Story
from asyncphp.loop.tracing import Tracing
from asyncphp.settings import RELOADABLE, Settings, SettingsError
from asyncphp.version import __version__
from asyncphp.wire.body import BadMessage, Limits, message_body

EXIT_OK = 0
EXIT_FLUSH_SECONDS = 1.0  # the longest a full stderr may hold the exit

TICK = 1.0  # seconds: the loop wakes at least this often, and updates STATUS= at most this often
REPLAY_BATCH = 1000  # spilled messages put back in the queue per turn, so Redis keeps being read
REPLAY_REST = 0.1  # seconds the replay rests after a message it took had to go back (no room to wait)


class Waits(Protocol):
    """What the loop uses of the poller (``asyncphp.loop.poller``): where its time passes."""

    def watch(self, fd: int, events: int, callback: Callback) -> None: ...
    def poll(self, timeout: float) -> None: ...
    def close(self) -> None: ...


class Pool(Protocol):
    """What the loop uses of the dispatcher (``asyncphp.loop.pool``)."""

    @property
    def in_flight(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def free(self) -> int: ...
    @property
    def readable(self) -> int: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def idle(self) -> bool: ...
    def configure(self, limits: PoolLimits, request_timeout: float) -> None: ...
    def has_room(self, size: int) -> bool: ...
    def submit(self, job: Job) -> None: ...
    def pump(self) -> None: ...
    def probe(self) -> None: ...
    def take_queued(self, which: Callable[[Job], bool]) -> list[Job]: ...
    def wake_at(self) -> float: ...
    def expire(self) -> None: ...
    def close(self) -> tuple[list[Job], list[Job]]: ...


class LinkView(Protocol):
    announced: bool
    down_since: float


class SourceView(Protocol):
    what: str

    def status(self) -> str: ...


class Connection(Protocol):
    """What the loop uses of a keeper (``asyncphp.loop.keeper``): one source kept connected."""

    @property
    def state(self) -> LinkView: ...
    @property
    def source(self) -> SourceView: ...
    @property
    def settled(self) -> bool: ...
    def turn(self, now: float, health_interval: float, free: int) -> None: ...
    def wake_at(self, free: int) -> float: ...
    def stop(self) -> None: ...
    def leave(self) -> None: ...
    def disconnect(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Hands:
    """The daemon's own methods, for the parts it is built of to call back."""

    request: Callable[[Job], bytes]  # a job's FastCGI request, at dispatch
    ended: Callable[[Job, Result], None]  # every job ends here, once
    keep: Callable[[list[Job]], list[Job]]  # jobs the pool stayed unreachable for
    published: Callable[[Message], None]  # a pub/sub message
    entry: Callable[[Message], None]  # a stream entry
    resubmit: Callable[[Job], None]  # a stream entry's job again, after a failure
    snapshot: Callable[[], dict[str, str | int | float]]  # for the heartbeat


@dataclass(frozen=True, slots=True)
class Parts:
    """What the daemon runs (``asyncphp.loop.factory`` builds them from the settings). The pool and
    the connections call the daemon back, so they are made from its :class:`Hands`."""

    poller: Waits  # the one the pool and the connections watch their sockets on
    counters: Counters
    metrics: Metrics
    tracing: Tracing
    overflow: Overflow
    routes: Routes
    story: Story
    pool: Callable[[Hands], Pool]
    connections: Callable[[Hands], list[Connection]]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        sink: Sink,
        notifier: Notifier,
        parts: Parts,
        reload: Callable[[], Settings] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.log = log
        self.sink = sink
        self.notifier = notifier
        self._reload = reload
        self._clock = clock
        self._wall = wall
        self.poller = parts.poller
        self.counters = parts.counters
        self.metrics = parts.metrics
        self.metrics.known(settings.channels + settings.streams)
        self.tracing = parts.tracing
        self.overflow = parts.overflow
        self.routes = parts.routes
        self.story = parts.story
        hands = Hands(
            self._request, self._ended, self._keep, self._on_published, self._on_entry, self._resubmit,
            self._snapshot,
        )  # fmt: skip
        self.dispatcher = parts.pool(hands)
        self._configure(settings)
        self._last_job_id = 0
        self.started = wall()
        self.last_error = LastError()
        log.addHandler(self.last_error)
        self.keepers = parts.connections(hands)
        self._ready = False
        self._stop_reason = ""
        self._replay_rest_until = 0.0
        self._stop_now = False
        self._status = ""
        self._next_status = 0.0
        self._next_watchdog = 0.0
        # Last: a scrape reads the dispatcher and the keepers.
        self.metrics.start(
            Gauges(
                lambda: self.dispatcher.in_flight, lambda: self.dispatcher.queued,
                lambda: self.settings.max_in_flight, self._redis_up,
            )
        )  # fmt: skip

    def _configure(self, settings: Settings) -> None:
        """Apply the settings that may change on SIGHUP."""
        self.limits = Limits(settings.max_message_bytes, settings.max_nesting, settings.max_fields)
        self.dispatcher.configure(
            PoolLimits(
                settings.max_in_flight, settings.max_queued, settings.max_queued_bytes, settings.retry_for
            ),
            settings.request_timeout,
        )
        self.overflow.configure(settings.max_spill_bytes)
        self.routes.configure(settings.release_wait)

    # The loop.

    def run(self) -> int:
        # Everything imported and built so far lives as long as the process: keep it out of the
        # cyclic collector, whose full passes over redis-py's ~30,000 objects took ~8 ms each.
        gc.freeze()
        signals = SignalWakeup((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        self.poller.watch(signals.fileno(), READ, lambda events: self._on_signals(signals))
        try:
            while not self._stop_reason:
                self._turn(self._timeout())
            self._drain()
        finally:
            try:
                for keeper in self.keepers:
                    keeper.disconnect()
                self.overflow.close()
                signals.close()
                self.poller.close()
                self.metrics.close()
                self.tracing.close()
            finally:
                self.sink.flush(wait=EXIT_FLUSH_SECONDS)  # the summary line among them
        return EXIT_OK

    def _turn(self, timeout: float) -> None:
        """One pass of the loop: socket events, then whatever periodic work is due."""
        self.poller.poll(timeout)
        now = self._clock()
        self.dispatcher.pump()
        if self.routes.waiting:
            self._releases_turn(now)
        self._replay()
        for keeper in self.keepers:
            keeper.turn(now, self.settings.redis_health_interval, self._readable())
        self.overflow.turn(now)
        if not self._ready and all(k.state.announced for k in self.keepers):
            self._ready = True
            self.notifier.ready(self._status_line())
        if now >= self._next_status:
            self._next_status = now + TICK
            self.dispatcher.expire()
            self._update_status()
        # From READY on, as systemd's watchdog timer runs from there too.
        if self._ready and self.notifier.watchdog_interval and now >= self._next_watchdog:
            self._next_watchdog = now + self.notifier.watchdog_interval
            self.notifier.watchdog()
        self.sink.flush()  # this turn's lines, in one write, before the loop waits again

    def _readable(self) -> int:
        """Entries a stream may be read for: the pool's room, less the entries waiting here for their
        release (a daemon without a release must not take the stream's jobs for it from one that has
        it: it holds no more of them than the pool could run). Pub/sub jobs waiting take none of it:
        they count against the queue's limits instead (:meth:`_room`)."""
        readable = self.dispatcher.readable
        return max(0, readable - self.routes.entries) if self.routes.waiting else readable

    def _room(self, size: int) -> bool:
        """Whether a pub/sub job of ``size`` bytes may be taken: a free request slot it would take
        at once, or room to hold it (:meth:`_held_room`)."""
        d = self.dispatcher
        if not d.has_room(size):
            return False
        # Nothing waits for its release (the common case, every message): the queue's room is all.
        return not self.routes.waiting or (d.free > 0 and not d.queued) or self._held_room(size)

    def _held_room(self, size: int) -> bool:
        """Whether a pub/sub job of ``size`` bytes may be held, queued or waiting for its release:
        max_queued and max_queued_bytes bound the two together (held here alone, each is memory
        nothing else would free)."""
        held, held_bytes = self.routes.held()
        d, s = self.dispatcher, self.settings
        return d.queued + held < s.max_queued and d.queued_bytes + held_bytes + size <= s.max_queued_bytes

    def _timeout(self) -> float:
        now = self._clock()
        readable = self._readable()
        wakes = [now + TICK, self._next_status, self.dispatcher.wake_at(), self.routes.wake_at()]
        wakes += [keeper.wake_at(readable) for keeper in self.keepers]
        if self._ready and self.notifier.watchdog_interval:
            wakes.append(self._next_watchdog)
        if self._replayable():
            wakes.append(now)  # more to replay than one turn took
        return max(0.0, min(wakes) - now)

    # Messages.

    def _on_published(self, message: Message) -> None:
        self.counters.received += 1
        self.metrics.received(message.channel)
        # Behind what the spill file holds, to keep the order; and without decoding it first,
        # so that a message with no room costs a buffered write and nothing more. (The bytes of
        # its form body are checked once it has one.)
        if self.overflow.waiting or not self._room(0):
            self.overflow.keep(message.channel, message.payload, "the queue is full")
            return
        self._admit(message)

    def _on_entry(self, message: Message) -> None:
        self.counters.received += 1
        self.metrics.received(message.channel)
        self._admit(message)

    def _admit(self, message: Message, replayed: bool = False) -> None:
        """Decode the message and queue its job; one ``replayed`` from the spill files is queued
        whatever the room (:meth:`_replayable` checked it, one message overshoots at most)."""
        try:
            body, meta, dropped = message_body(message.payload, self.limits)
        # BadMessage, or a case the encoder missed: one message must not end the daemon.
        except Exception as exc:
            self.counters.rejected += 1
            self.metrics.rejected(message.channel)
            reason = (
                str(exc) if isinstance(exc, BadMessage) else f"cannot encode it ({type(exc).__name__}: {exc})"
            )
            self.log.warning(
                "skipped a message on %s: %s; message %s", message.channel, reason, preview(message.payload),
                extra={"ASYNCPHP_CHANNEL": message.channel},
            )  # fmt: skip
            message.origin.rejected(message, reason)
            return
        self._last_job_id += 1
        job = Job(
            self._last_job_id, message.channel, body, self._clock(), attempt=message.attempt,
            max_attempt=self.settings.max_attempts if message.retry_here else 0, origin=message.origin,
            message_id=message.message_id, payload=message.payload, due_at=message.due_at, meta=meta,
            first_id=message.first_id,
        )  # fmt: skip
        for what in dropped:
            self.counters.traces_dropped += 1
            self.story.dropped_trace(job, what)
        placed, reason = self.routes.place(job, job.received)
        if placed is Placed.RUN:
            self._queue(job, replayed)
        elif placed is Placed.REFUSED:
            self._refuse(job, reason)
        elif not job.published or self._held_room(len(job.body)):
            self.routes.wait_for(job, job.received)  # its release is missing
        elif replayed:  # back where it was, at the front; the replay rests, not to go round
            self._keep_older([job], "no room among the jobs waiting for their release")
            self._replay_rest_until = job.received + REPLAY_REST
        else:
            self.overflow.keep(job.channel, job.payload, "the queue is full")

    def _queue(self, job: Job, replayed: bool = False) -> None:
        if replayed or (
            self._room(len(job.body)) if job.published else self.dispatcher.has_room(len(job.body))
        ):
            self.tracing.begin(job)  # from here on it is the daemon's to run: its span opens
            self.dispatcher.submit(job)
        elif job.published:
            self.overflow.keep(job.channel, job.payload, "the queue is full")
        else:
            self._no_room(job)

    def _releases_turn(self, now: float) -> None:
        """In the order the routes give them: the jobs whose release came run, the others are refused."""
        for job, refused in self.routes.turn(now):
            if refused:
                self._refuse(job, refused)
            else:
                self._queue(job)

    def _refuse(self, job: Job, reason: str) -> None:
        """A job that cannot run here: a stream entry is dead-lettered with the reason; a pub/sub
        message is dropped, said."""
        self.story.refused(job, reason)
        self._ended(job, Result(Outcome.REJECTED if not job.published else Outcome.DROPPED, reason))

    def _resubmit(self, job: Job) -> None:
        """A stream entry's job again, after a failure: the same job, already decoded and counted."""
        if self.dispatcher.has_room(len(job.body)):
            self.tracing.begin(job)  # a span per attempt
            self.dispatcher.submit(job)
        else:
            self._no_room(job)

    def _no_room(self, job: Job) -> None:
        """A stream entry's job with no room in the queue (a claim or a retry beyond what the
        reads asked for): it stays pending in Redis, for a claim later, here or elsewhere."""
        self.story.no_room(job, self.dispatcher.queued)
        self._ended(job, Result(Outcome.DROPPED, "the queue was full"))

    def _replay(self) -> None:
        """Spilled messages back into the queue, oldest first, while :meth:`_replayable`."""
        if self.overflow.waiting and not self._stop_reason and not self.dispatcher.reachable:
            self.dispatcher.probe()  # in a pool outage with nothing queued, nothing else would see it end
        for _ in range(REPLAY_BATCH):
            if not self._replayable():
                return
            taken = self.overflow.take(1)
            if not taken:
                return
            spilled = taken[0]
            message = Message(spilled.channel, spilled.payload, attempt=spilled.attempt)
            self._admit(message, replayed=True)

    def _replayable(self) -> bool:
        """Whether to put a spilled message back in the queue now: not while stopping (they wait
        for the next start), nor while the pool cannot be reached (the spill files carry them
        through the outage); and up to half the queue, in count and bytes, leaving the other
        half for what keeps arriving meanwhile (behind them, in order, as long as any are left)."""
        if self._stop_reason or not self.overflow.replayable or not self.dispatcher.reachable:
            return False
        if self._replay_rest_until and self._clock() < self._replay_rest_until:
            return False
        d, s = self.dispatcher, self.settings
        held, held_bytes = self.routes.held()  # pub/sub jobs waiting for their release
        if held and (held >= s.max_queued // 2 or held_bytes >= s.max_queued_bytes // 2):
            return False  # what comes back would only wait with them: the files keep it meanwhile
        if not d.queued and not held:
            return True  # whatever the limits (max_queued_bytes = 0, say): one at a time, then
        queued, queued_bytes = d.queued + held, d.queued_bytes + held_bytes
        return (d.free > 0 or queued < s.max_queued // 2) and queued_bytes < s.max_queued_bytes // 2

    def _request(self, job: Job) -> bytes:
        return self.routes.request(job, self.tracing.dispatch(job))

    def _keep(self, jobs: list[Job]) -> list[Job]:
        """Jobs the pool could not be reached for in retry_for, oldest first: the pub/sub ones
        have nothing else to keep them, so the spill files carry them through the outage, with
        the pub/sub jobs still queued behind them, in order (they are older than anything kept,
        and newer messages go behind them from now on). Returns the jobs not kept: a stream
        entry stays in Redis anyway."""
        if not self.overflow.keeps:
            return jobs
        # A stream entry's job keeps its place.
        queued = self.dispatcher.take_queued(lambda queued: queued.published)
        self._keep_older([job for job in jobs if job.published] + queued, "the pool stayed unreachable")
        return [job for job in jobs if not job.published]

    def _keep_older(self, jobs: list[Job], why: str) -> None:
        for job in jobs:  # out of the daemon's hands until replayed, a new job then
            self.tracing.end(job, Result(Outcome.ABANDONED, f"{why}: kept in the spill file"))
        now, wall = self._clock(), self._wall()
        self.overflow.keep_older(
            ((j.channel, j.payload, wall - (now - j.received), j.attempt) for j in jobs), why
        )

    def _ended(self, job: Job, result: Result) -> None:
        """Every job ends here, once: counted, measured, and its origin told; unless its routes
        take it back (its release's script gone from under the pool: it waits for it again)."""
        waits = self.routes.taken_back(job, result, self._clock())
        if waits:
            self.tracing.end(job, Result(Outcome.ABANDONED, waits))
            return
        self._end(job, result)

    def _end(self, job: Job, result: Result) -> None:
        self.counters.ended(result.outcome)
        self.metrics.ended(job.channel, result.outcome, result.seconds)
        self.tracing.end(job, result)
        job.origin.ended(job, result)

    def _on_signals(self, signals: SignalWakeup) -> None:
        for sig in signals.received():
            if sig == signal.SIGHUP:
                self._reload_settings()
            elif not self._stop_reason:
                self._stop_reason = sig.name
            else:
                self.log.warning("%s again: stopping now", sig.name)
                self._stop_now = True

    def _reload_settings(self) -> None:
        if self._reload is None:
            return
        try:
            new = self._reload()
        except SettingsError as exc:
            self.log.error("SIGHUP: settings not reloaded: %s", exc)
            return
        changed = [
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(new, f.name) != getattr(self.settings, f.name)
        ]
        applied = [name for name in changed if name in RELOADABLE]
        ignored = [name for name in changed if name not in RELOADABLE]
        self.settings = dataclasses.replace(self.settings, **{name: getattr(new, name) for name in applied})
        self.log.setLevel(self.settings.log_level)
        self._configure(self.settings)
        # WARNING, so that the answer to an operator's SIGHUP shows whatever the log level.
        self.log.warning("SIGHUP: settings reloaded; changed: %s", ", ".join(applied) or "nothing")
        if ignored:
            self.log.warning("SIGHUP: %s changed but take effect only after a restart", ", ".join(ignored))

    def _drain(self) -> None:
        """Stop taking messages; let queued and running jobs finish and every settle be confirmed,
        up to drain_timeout or a second signal. What is left is said: spilled, pending, or
        running on in the pool."""
        d = self.dispatcher
        self.notifier.stopping(f"stopping: {self._stop_reason} · {d.in_flight} in flight · {d.queued} queued")
        self.log.info("stopping (%s): %d in flight, %d queued", self._stop_reason, d.in_flight, d.queued)
        deadline = self._clock() + self.settings.drain_timeout
        for keeper in self.keepers:
            keeper.stop()
        # One turn whatever the drain_timeout (0 included): settles gathered so far go out now.
        self._turn(0.0)
        while not self._stop_now:
            now = self._clock()
            if (d.idle and all(k.settled for k in self.keepers)) or now >= deadline:
                break
            self._turn(min(self._timeout(), max(0.0, deadline - now)))
        reason = f"{self._stop_reason}: drain ended" if not self._stop_now else "stopped at once"
        self._leave(reason)
        for keeper in self.keepers:
            keeper.leave()
        self.overflow.close()  # before the summary: what it could not write is counted there
        c = self.counters
        self.log.info(
            "stopped · %d received · %d dispatched · %d completed · %d failed · %d retried · %d given up · "
            "%d dropped · %d rejected · %d spilled · %d unfinished · %d dead-lettered",
            c.received, c.dispatched, c.completed, c.failed, c.retried, c.given_up, c.dropped, c.rejected,
            c.spilled, c.abandoned, c.dead_lettered,
        )  # fmt: skip

    def _leave(self, reason: str) -> None:
        """The end of a drain: every job not finished is accounted for, each on one line."""
        running, unsent = self.dispatcher.close()
        unsent += self.routes.clear()
        for job in running:
            self.story.running_on(job, reason)
            self._ended(job, Result(Outcome.ABANDONED, reason))
        if self.overflow.keeps:
            self._keep_older([job for job in unsent if job.published], "the drain ended")
            unsent = [job for job in unsent if not job.published]
        for job in unsent:
            self.story.undone(job, reason)
            self._ended(job, Result(Outcome.ABANDONED, reason))

    # Status.

    def _status_line(self) -> str:
        now = self._clock()
        down = [k.state.down_since for k in self.keepers if k.state.down_since != math.inf]
        if self._stop_reason:
            state = f"stopping ({self._stop_reason})"
        elif down:
            state = f"redis unreachable for {now - min(down):.0f} s, reconnecting"
        elif not self._ready:
            state = "connecting to redis for " + " and ".join(k.source.what for k in self.keepers)
        else:
            state = "subscribed to " + ", ".join(self.settings.channels + self.settings.streams)
        d, c = self.dispatcher, self.counters
        parts = [state, f"{c.dispatched} dispatched", f"{d.in_flight} in flight", f"{d.queued} queued",
                 f"{c.not_ok} failed"]  # fmt: skip
        if self.overflow.waiting:
            parts.append(f"{self.overflow.waiting} in the spill file")
        parts += self.routes.status()
        parts += [text for text in (k.source.status() for k in self.keepers) if text]
        return " · ".join(parts)

    def _redis_up(self) -> float:
        """For the metrics' own thread: a read of the keepers' states, nothing more (0 until they
        exist, early in the start)."""
        try:
            keepers = self.keepers
        except AttributeError:
            return 0.0
        return float(all(k.state.down_since == math.inf for k in keepers))

    def _snapshot(self) -> dict[str, str | int | float]:
        """What the heartbeat tells ``asyncphp status``."""
        d, s = self.dispatcher, self.settings
        return {
            "host": socket.gethostname(), "pid": os.getpid(), "version": __version__, "started": self.started,
            "updated": self._wall(), "channels": ",".join(s.channels), "streams": ",".join(s.streams),
            "group": s.group if s.streams else "", "pool": str(s.fpm_socket), "state": self._status_line(),
            **dataclasses.asdict(self.counters), "in_flight": d.in_flight, "queued": d.queued,
            "spill_waiting": self.overflow.waiting, **self.routes.snapshot(),
            "last_error": self.last_error.text, "last_error_at": self.last_error.at,
        }  # fmt: skip

    def _update_status(self) -> None:
        status = self._status_line()
        if status != self._status:
            self._status = status
            self.notifier.status(status)
