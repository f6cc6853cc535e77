"""The daemon: Redis messages in, FastCGI requests out, one event loop, never waiting on a worker.

    source (Redis) ─▶ JSON ─▶ form body ─▶ FastCGI request ─▶ dispatcher ─▶ pool ─▶ log line
                                                                   └─ no room: spill file (pub/sub)

One thread, one poller: the Redis sockets, the pool connections and a signal wakeup socket are
all watched together, and the loop's bounded wait also gives periodic work its rhythm (backoff
ends, Redis health pings, the STATUS line, watchdog pings). Signal handlers only record; the loop
acts.
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

from asyncphp import __version__
from asyncphp.core.admission import Limits as PoolLimits
from asyncphp.core.jobs import Counters, Job, Message, Outcome, Result
from asyncphp.core.ledger import Policy
from asyncphp.core.releases import ReleaseWait
from asyncphp.logfmt import preview
from asyncphp.loop.heartbeat import Heartbeat, LastError
from asyncphp.loop.keeper import Keeper, Source
from asyncphp.loop.logsink import Sink, job_fields
from asyncphp.loop.overflow import Overflow
from asyncphp.loop.poller import READ, Poller
from asyncphp.loop.pool import Dispatcher
from asyncphp.loop.pubsub import DueNotices, PubSubSource
from asyncphp.loop.releases import PLACEHOLDER, OutsideRoot, ReleaseFinder
from asyncphp.loop.service import Notifier, SignalWakeup
from asyncphp.loop.streams import StreamSource
from asyncphp.loop.tracing import OtelTracing, Tracing
from asyncphp.ops.metrics import serve
from asyncphp.redisurl import Target, cluster, slot
from asyncphp.settings import RELOADABLE, Settings, SettingsError
from asyncphp.wire import scripts
from asyncphp.wire.body import BadMessage, Limits, message_body
from asyncphp.wire.request import RequestBuilder

EXIT_OK = 0
EXIT_FLUSH_SECONDS = 1.0  # the longest a full stderr may hold the exit

TICK = 1.0  # seconds: the loop wakes at least this often, and updates STATUS= at most this often
# What php-fpm says on stderr, with its 404, for a SCRIPT_FILENAME it cannot open (PHP 8.2; before).
SCRIPT_MISSING = (b"Unable to open primary script", b"Primary script unknown")
MAX_BUILDERS = 64  # requests' constant parts kept per release script
REPLAY_BATCH = 1000  # spilled messages put back in the queue per turn, so Redis keeps being read
REPLAY_REST = 0.1  # seconds the replay rests after a message it took had to go back (no room to wait)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        sink: Sink,
        notifier: Notifier,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.sink = sink
        self.notifier = notifier
        self._reload = reload
        self.counters = Counters()
        self.poller = Poller()
        self.metrics = serve(
            settings.metrics_listen, lambda: self.dispatcher.in_flight, lambda: self.dispatcher.queued,
            lambda: self.settings.max_in_flight, self._redis_up,
        )  # fmt: skip
        self.metrics.known(settings.channels + settings.streams)
        self.tracing = OtelTracing(log) if settings.traces else Tracing()
        self.requests = RequestBuilder(settings.worker_script)
        self._builders: dict[str, RequestBuilder] = {}  # per release's script
        self.finder = ReleaseFinder(settings.worker_script, settings.releases_root)
        self.release_wait = ReleaseWait(settings.release_wait)
        self.dispatcher = Dispatcher(
            self.poller,
            settings.fpm_socket,
            self._request,
            self._ended,
            self._keep,
            self.counters,
            self.metrics,
            log,
            self.sink,
        )
        self.overflow = Overflow(
            settings.state_dir, settings.max_spill_bytes, self.counters, self.metrics, log
        )
        self._configure(settings)
        self._last_job_id = 0
        self.started = time.time()
        self.last_error = LastError()
        log.addHandler(self.last_error)
        sources = self._sources(settings)
        readers = sum(isinstance(source, StreamSource) for source in sources)
        self.keepers = [
            Keeper(
                source,
                settings.redis_url,
                self.poller,
                log,
                readers if isinstance(source, StreamSource) else 1,
            )
            for source in sources
        ]
        self._ready = False
        self._stop_reason = ""
        self._replay_rest_until = 0.0
        self._stop_now = False
        self._status = ""
        self._next_status = 0.0
        self._next_watchdog = 0.0
        self.metrics.start()  # last: a scrape reads the dispatcher and the keepers

    def _sources(self, settings: Settings) -> list[Source]:
        sources: list[Source] = []
        url = settings.redis_url
        target = Target(url, settings.redis_password_file)  # one slot map for all, on a cluster
        on_cluster = target.cluster
        if settings.channels:
            if on_cluster:
                # SSUBSCRIBE takes channels of one slot: a connection per slot, to its primary. And
                # SUBSCRIBE there too: a PUBLISH counts the receiving node's subscribers only, and
                # the caller publishes to the channel's primary (see asyncphp.caller.publish).
                sharded = cluster(url).pubsub == "sharded"
                sources += [
                    PubSubSource(target, channels, self._on_published, sharded=sharded)
                    for channels in _by_slot(settings.channels)
                ]
            else:
                sources.append(PubSubSource(target, settings.channels, self._on_published))
        if settings.streams:
            policy = Policy(
                settings.claim_idle, settings.max_attempts, settings.retry_delay, settings.max_queued
            )
            lanes = settings.lanes
            # On a cluster, one source per slot, read from the slot's primary: a read, a script, a
            # MULTI takes keys of one slot (a stream and its own keys share one; see settings).
            groups = _by_slot(lanes.streams) if on_cluster else [lanes.streams]
            streams = [
                StreamSource(
                    target, group, group=settings.group, consumer=settings.consumer,
                    policy=policy, deliver=self._on_entry, resubmit=self._resubmit, counters=self.counters,
                    metrics=self.metrics, log=self.log, lanes=lanes.only(group),
                    move_delayed=settings.move_delayed,
                )
                for group in groups
            ]  # fmt: skip
            sources += streams
            if settings.move_delayed:
                # Told when a job is added due before all others: the daemon sleeps until then.
                by_stream = {stream: source for source in streams for stream in source.streams}

                def heard(message: Message) -> None:
                    source = by_stream.get(message.channel.removesuffix(scripts.DELAYED_SUFFIX))
                    if source is not None:
                        source.heard(message)

                def notices_back() -> None:
                    for source in streams:
                        source.notices_back()

                channels = [scripts.Keys(stream).delayed for stream in settings.streams]
                sources.append(DueNotices(target, channels, heard, notices_back, self.log))
        if settings.heartbeat_interval:
            interval = settings.heartbeat_interval
            sources.append(Heartbeat(target, settings.consumer, interval, self._snapshot))
        return sources

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
        self.release_wait.wait = settings.release_wait

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
        now = time.monotonic()
        self.dispatcher.pump()
        if self.release_wait:
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
        return max(0, readable - self.release_wait.entries) if self.release_wait else readable

    def _room(self, size: int) -> bool:
        """Whether a pub/sub job of ``size`` bytes may be taken: a free request slot it would take
        at once, or room to hold it (:meth:`_held_room`)."""
        d = self.dispatcher
        if not d.has_room(size):
            return False
        # Nothing waits for its release (the common case, every message): the queue's room is all.
        return not self.release_wait or (d.free > 0 and not d.queued) or self._held_room(size)

    def _held_room(self, size: int) -> bool:
        """Whether a pub/sub job of ``size`` bytes may be held, queued or waiting for its release:
        max_queued and max_queued_bytes bound the two together (held here alone, each is memory
        nothing else would free)."""
        held, held_bytes = self.release_wait.held()
        d, s = self.dispatcher, self.settings
        return d.queued + held < s.max_queued and d.queued_bytes + held_bytes + size <= s.max_queued_bytes

    def _timeout(self) -> float:
        now = time.monotonic()
        readable = self._readable()
        wakes = [now + TICK, self._next_status, self.dispatcher.wake_at(), self.release_wait.wake_at()]
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
            self._last_job_id, message.channel, body, time.monotonic(), attempt=message.attempt,
            max_attempt=self.settings.max_attempts if message.retry_here else 0, origin=message.origin,
            message_id=message.message_id, payload=message.payload, due_at=message.due_at,
            release=meta.release, traceparent=meta.traceparent, tracestate=meta.tracestate,
        )  # fmt: skip
        for what in dropped:
            self.counters.traces_dropped += 1
            self.log.warning("job %d on %s: %s", job.id, job.channel, what, extra=job_fields(job))
        if self.finder.templated and not self._place(job, replayed):
            return
        self._queue(job, replayed)

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

    # Release-aware jobs.

    def _place(self, job: Job, replayed: bool = False) -> bool:
        """Give ``job`` its release's script; False when it cannot run now (it waits for its
        release, or was refused, or went back to the spill file: ``replayed`` from there)."""
        now = time.monotonic()
        release = job.release = job.release or self.settings.default_release
        if not release:
            self._refuse(job, "it names no release, and default_release is not set")
            return False
        try:
            script = self.finder.locate(release, now)
        except OutsideRoot as exc:
            self._refuse(job, str(exc))
            return False
        if script is None:
            if job.published and not self._held_room(len(job.body)):
                if replayed:  # back where it was, at the front; the replay rests, not to go round
                    self._keep_older([job], "no room among the jobs waiting for their release")
                    self._replay_rest_until = now + REPLAY_REST
                else:
                    self.overflow.keep(job.channel, job.payload, "the queue is full")
                return False
            if not self.release_wait.waits_for(release):
                self.log.warning(
                    "release %s is not on this host (%s): its jobs wait for it, up to release_wait (%g s)",
                    release, self.finder.template.replace(PLACEHOLDER, release), self.release_wait.wait,
                )  # fmt: skip
            self.release_wait.add(job, release, now)
            return False
        job.script = script
        return True

    def _releases_turn(self, now: float) -> None:
        """Look again for the releases jobs wait for; run the jobs of those found; give up those
        that waited release_wait."""
        for release in self.release_wait.due(now):
            try:
                script = self.finder.locate(release, now)
            except OutsideRoot as exc:
                for job in self.release_wait.found(release):
                    self._refuse(job, str(exc))
                continue
            if script is None:
                self.release_wait.missing(release, now)
                continue
            jobs = self.release_wait.found(release)
            self.log.warning("release %s is here: its %d waiting job(s) run", release, len(jobs))
            for job in jobs:
                job.script = script
                self._queue(job)
        for job in self.release_wait.expired(now):
            wait = self.release_wait.wait
            self._refuse(
                job, f"release {job.release} did not reach this host within release_wait ({wait:g} s)"
            )

    def _refuse(self, job: Job, reason: str) -> None:
        """A job that cannot run here: a stream entry is dead-lettered with the reason; a pub/sub
        message is dropped, said."""
        self.log.error(
            "job %d on %s not run: %s; message %s", job.id, job.channel, reason, preview(job.payload),
            extra=job_fields(job),
        )  # fmt: skip
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
        self.log.warning(
            "job %d on %s: no room in the queue (%d queued): entry %s left pending, claimed after claim_idle",
            job.id, job.channel, self.dispatcher.queued, job.message_id, extra=job_fields(job),
        )  # fmt: skip
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
        if self._replay_rest_until and time.monotonic() < self._replay_rest_until:
            return False
        d, s = self.dispatcher, self.settings
        held, held_bytes = self.release_wait.held()  # pub/sub jobs waiting for their release
        if held and (held >= s.max_queued // 2 or held_bytes >= s.max_queued_bytes // 2):
            return False  # what comes back would only wait with them: the files keep it meanwhile
        if not d.queued and not held:
            return True  # whatever the limits (max_queued_bytes = 0, say): one at a time, then
        queued, queued_bytes = d.queued + held, d.queued_bytes + held_bytes
        return (d.free > 0 or queued < s.max_queued // 2) and queued_bytes < s.max_queued_bytes // 2

    def _request(self, job: Job) -> bytes:
        builder = self._builder(job.script) if job.script else self.requests
        traceparent, tracestate = self.tracing.dispatch(job)
        return builder.build(
            job.id, job.channel, job.body, job.attempt, job.message_id, job.due_at, job.release,
            traceparent, tracestate,
        )  # fmt: skip

    def _builder(self, script: str) -> RequestBuilder:
        builder = self._builders.get(script)
        if builder is None:
            if len(self._builders) >= MAX_BUILDERS:
                self._builders.clear()  # releases come and go: keep the recent ones
            builder = self._builders[script] = RequestBuilder(script)
        return builder

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
        now, wall = time.monotonic(), time.time()
        self.overflow.keep_older(
            ((j.channel, j.payload, wall - (now - j.received), j.attempt) for j in jobs), why
        )

    def _ended(self, job: Job, result: Result) -> None:
        """Every job ends here, once: counted, measured, and its origin told. A job whose release's
        script the pool did not find (removed since it was looked for) waits for it again instead."""
        if job.script and result.status == 404 and any(said in result.stderr for said in SCRIPT_MISSING):
            self.finder.forget(job.release)
            if job.received + self.release_wait.wait > time.monotonic():
                self.log.warning(
                    "job %d on %s: release %s is gone from this host (the pool found no %s): it waits for it",
                    job.id, job.channel, job.release, job.script, extra=job_fields(job),
                )  # fmt: skip
                job.script = ""
                self.tracing.end(
                    job, Result(Outcome.ABANDONED, f"release {job.release} gone: waiting for it")
                )
                self.release_wait.add(job, job.release, time.monotonic())
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
        deadline = time.monotonic() + self.settings.drain_timeout
        for keeper in self.keepers:
            keeper.stop()
        # One turn whatever the drain_timeout (0 included): settles gathered so far go out now.
        self._turn(0.0)
        while not self._stop_now:
            now = time.monotonic()
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
        unsent += self.release_wait.clear()
        for job in running:
            # The pool has it; with ignore_user_abort on (commands.conf) it runs to its end.
            self.log.warning(
                "job %d on %s still running in the pool (%s): its outcome will not be logged",
                job.id, job.channel, reason, extra=job_fields(job),
            )  # fmt: skip
            self._ended(job, Result(Outcome.ABANDONED, reason))
        if self.overflow.keeps:
            self._keep_older([job for job in unsent if job.published], "the drain ended")
            unsent = [job for job in unsent if not job.published]
        for job in unsent:
            if job.published:
                what = f"message {preview(job.payload)}"
            else:
                what = f"entry {job.message_id} stays pending, for another consumer"
            self.log.error(
                "job %d on %s left undone (%s); %s", job.id, job.channel, reason, what, extra=job_fields(job)
            )
            self._ended(job, Result(Outcome.ABANDONED, reason))

    # Status.

    def _status_line(self) -> str:
        now = time.monotonic()
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
        for release, count in self.release_wait.counts().items():
            gone = " (removed)" if release in self.finder.seen else ""
            parts.append(f"{count} waiting for release {release}{gone}")
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
            "updated": time.time(), "channels": ",".join(s.channels), "streams": ",".join(s.streams),
            "group": s.group if s.streams else "", "pool": str(s.fpm_socket), "state": self._status_line(),
            **dataclasses.asdict(self.counters), "in_flight": d.in_flight, "queued": d.queued,
            "spill_waiting": self.overflow.waiting,
            "releases_waiting": ",".join(f"{r}={n}" for r, n in self.release_wait.counts().items()),
            "releases_removed": ",".join(r for r in self.release_wait.counts() if r in self.finder.seen),
            "last_error": self.last_error.text, "last_error_at": self.last_error.at,
        }  # fmt: skip

    def _update_status(self) -> None:
        status = self._status_line()
        if status != self._status:
            self._status = status
            self.notifier.status(status)


def _by_slot(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``names`` grouped by cluster slot, in their order."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(slot(name), []).append(name)
    return [tuple(group) for group in groups.values()]
