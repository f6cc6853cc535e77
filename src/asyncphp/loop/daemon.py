"""The daemon: Redis messages in, FastCGI requests out, one event loop, never waiting on a worker.

    source (Redis) ─▶ JSON ─▶ form body ─▶ FastCGI request ─▶ dispatcher ─▶ pool ─▶ log line

One thread, one poller: the Redis socket, the pool connections and a signal wakeup socket are
all watched together, and the loop's bounded wait also gives periodic work its rhythm (backoff
ends, Redis health pings, the STATUS line, watchdog pings). Signal handlers only record; the loop
acts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import redis

from asyncphp import __version__
from asyncphp.core.jobs import Job, Message, Outcome, Result
from asyncphp.loop.heartbeat import Heartbeat, LastError
from asyncphp.loop.keeper import Keeper
from asyncphp.loop.pool import Dispatcher
from asyncphp.wire.body import BadMessage, Limits, form_body

if TYPE_CHECKING:
    from asyncphp.ops.metrics import Metrics
from asyncphp.logfmt import preview
from asyncphp.loop.poller import READ, Poller
from asyncphp.loop.pubsub import PubSubSource
from asyncphp.loop.service import Notifier, ServiceError, SignalWakeup, configure_logging
from asyncphp.loop.streams import StreamSource
from asyncphp.settings import RELOADABLE, Settings, SettingsError, load
from asyncphp.wire.request import RequestBuilder

EXIT_OK = 0
EXIT_BAD_SETTINGS = 2

TICK = 1.0  # seconds: the loop wakes at least this often, and updates STATUS= at most this often
UNSUBSCRIBE_TIMEOUT = 1.0  # seconds to wait at shutdown for Redis to confirm the unsubscribe


class Daemon:
    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        notifier: Notifier,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.notifier = notifier
        self._reload = reload
        self.poller = Poller()
        self.limits = _limits(settings)
        self.requests = RequestBuilder(settings.worker_script)
        self.dispatcher = Dispatcher(
            self.poller,
            settings,
            lambda job: self.requests.build(job.id, job.channel, job.body, job.attempts, job.message_id),
            self._settle,
            log,
        )
        self.received = 0
        self.rejected = 0
        self._last_job_id = 0
        self.started = time.time()
        self.last_error = LastError()
        log.addHandler(self.last_error)
        self.pubsub: PubSubSource | None = None
        self.streams: StreamSource | None = None
        self.heartbeat: Heartbeat | None = None
        self._pubsub_keeper: Keeper | None = None
        self._streams_keeper: Keeper | None = None
        self._heartbeat_keeper: Keeper | None = None
        password_file = settings.redis_password_file
        if settings.channels:
            self.pubsub = PubSubSource(settings.redis_url, settings.channels, password_file, self._on_message)
            self._pubsub_keeper = Keeper(
                self.pubsub, ", ".join(settings.channels), settings.redis_url, self.poller, log
            )
        if settings.streams:
            self.streams = StreamSource(
                settings.redis_url, settings.streams, group=settings.group, consumer=settings.consumer,
                claim_idle=settings.claim_idle, max_attempts=settings.max_attempts,
                retry_delay=settings.retry_delay, password_file=password_file, deliver=self._on_message,
                resubmit=self.dispatcher.submit,
                log=log,
            )  # fmt: skip
            what = (
                "stream "
                + ", ".join(settings.streams)
                + f" (group {settings.group}, consumer {settings.consumer})"
            )
            self._streams_keeper = Keeper(self.streams, what, settings.redis_url, self.poller, log)
        if settings.heartbeat_interval:
            self.heartbeat = Heartbeat(
                settings.redis_url,
                password_file,
                settings.consumer,
                settings.heartbeat_interval,
                self._snapshot,
            )
            self._heartbeat_keeper = Keeper(
                self.heartbeat, "heartbeats", settings.redis_url, self.poller, log, quiet=True
            )
        self.metrics: Metrics | None = None
        if settings.metrics_listen:
            from asyncphp.ops.metrics import Metrics  # prometheus_client: only when asked for

            d = self.dispatcher
            self.metrics = Metrics(settings.metrics_listen, lambda: d.in_flight, lambda: d.queued)
            d.metrics = self.metrics
            if self.streams is not None:
                self.streams.metrics = self.metrics
        self.keepers = [
            k for k in (self._pubsub_keeper, self._streams_keeper, self._heartbeat_keeper) if k is not None
        ]
        self._ready = False
        self._stop_reason: str | None = None
        self._stop_now = False
        self._status = ""
        self._next_status = 0.0
        self._next_watchdog = 0.0

    # The loop.

    def run(self) -> int:
        # Everything imported and built so far lives as long as the process: keep it out of the
        # cyclic collector, whose full passes over redis-py's ~30,000 objects took ~8 ms each.
        gc.freeze()
        signals = SignalWakeup((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        self.poller.watch(signals.fileno(), READ, lambda events: self._on_signals(signals))
        try:
            while self._stop_reason is None:
                self._turn(self._timeout())
            self._drain()
        finally:
            for keeper in self.keepers:
                keeper.disconnect()
            signals.close()
            self.poller.close()
            if self.metrics is not None:
                self.metrics.close()
        return EXIT_OK

    def _turn(self, timeout: float) -> None:
        """One pass of the loop: socket events, then whatever periodic work is due."""
        self.poller.poll(timeout)
        now = time.monotonic()
        for keeper in self.keepers:
            if keeper.connect_at is not None and now >= keeper.connect_at and self._stop_reason is None:
                keeper.connect()
            elif self._stop_reason is None:
                keeper.check(now, self.settings.redis_health_interval)
        self.dispatcher.pump()
        if self.streams is not None and self._streams_keeper is not None:
            self._streams_keeper.run(functools.partial(self.streams.tick, self._free()))
        if self.heartbeat is not None and self._heartbeat_keeper is not None:
            self._heartbeat_keeper.run(self.heartbeat.tick)
        if not self._ready and all(keeper.announced for keeper in self.keepers):
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

    def _timeout(self) -> float:
        now = time.monotonic()
        wakes = [now + TICK, self._next_status]
        wakes += [k.connect_at for k in self.keepers if k.connect_at is not None]
        if self._ready and self.notifier.watchdog_interval:
            wakes.append(self._next_watchdog)
        pool_wake = self.dispatcher.wake_at()
        if pool_wake is not None:
            wakes.append(pool_wake)
        keeper = self._streams_keeper
        if self.streams is not None and keeper is not None and keeper.connected and self._free() > 0:
            retry_wake = self.streams.wake_at()  # only worth waking for when a slot can take it
            if retry_wake is not None:
                wakes.append(retry_wake)
        return max(0.0, min(wakes) - now)

    def _free(self) -> int:
        """Request slots nothing is waiting for: what the stream source may read."""
        d = self.dispatcher
        return d.max_in_flight - d.in_flight - d.queued

    # Messages.

    def _on_message(self, message: Message) -> None:
        self.received += 1
        if self.metrics is not None:
            self.metrics.received(message.channel)
        try:
            body = form_body(message.payload, self.limits)
        # BadMessage, or a case the encoder missed: one message must not end the daemon.
        except Exception as exc:
            self.rejected += 1
            if self.metrics is not None:
                self.metrics.rejected(message.channel)
            reason = (
                str(exc) if isinstance(exc, BadMessage) else f"cannot encode it ({type(exc).__name__}: {exc})"
            )
            self.log.warning(
                "skipped a message on %s: %s; message %s", message.channel, reason, preview(message.payload),
                extra={"ASYNCPHP_CHANNEL": message.channel},
            )  # fmt: skip
            if self.streams is not None and message.origin is not None:
                self.streams.settle(message.origin, Result(Outcome.REJECTED, f"bad message: {reason}"))
            return
        self._last_job_id += 1
        # attempts: sends so far; the dispatcher counts the one it is about to make.
        job = Job(
            self._last_job_id, message.channel, body, time.monotonic(), message.deliveries - 1,
            origin=message.origin, message_id=message.message_id,
        )  # fmt: skip
        self.dispatcher.submit(job)

    def _settle(self, job: Job, result: Result) -> None:
        if self.metrics is not None:
            self.metrics.ended(job.channel, result.outcome, result.seconds)
        if self.streams is not None and job.origin is not None:
            self.streams.settle(job.origin, result, job)

    def _on_signals(self, signals: SignalWakeup) -> None:
        for sig in signals.received():
            if sig == signal.SIGHUP:
                self._reload_settings()
            elif self._stop_reason is None:
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
        self.limits = _limits(self.settings)
        self.dispatcher.configure(self.settings)
        # WARNING, so that the answer to an operator's SIGHUP shows whatever the log level.
        self.log.warning("SIGHUP: settings reloaded; changed: %s", ", ".join(applied) or "nothing")
        if ignored:
            self.log.warning("SIGHUP: %s changed but take effect only after a restart", ", ".join(ignored))

    def _drain(self) -> None:
        """Stop taking messages, then let queued and in-flight jobs finish, up to drain_timeout or a
        second signal; what is left is logged job by job (stream entries stay pending)."""
        d = self.dispatcher
        self.notifier.stopping(f"stopping: {self._stop_reason} · {d.in_flight} in flight · {d.queued} queued")
        self.log.info("stopping (%s): %d in flight, %d queued", self._stop_reason, d.in_flight, d.queued)
        deadline = time.monotonic() + self.settings.drain_timeout
        unsubscribe_by = time.monotonic() + UNSUBSCRIBE_TIMEOUT
        for keeper in self.keepers:
            keeper.connect_at = None  # no reconnecting while stopping
        waiting_unsubscribe = False
        pubsub_keeper = self._pubsub_keeper
        if self.pubsub is not None and pubsub_keeper is not None and pubsub_keeper.connected:
            try:
                self.pubsub.stop()
                waiting_unsubscribe = True
            except (redis.RedisError, OSError):
                pubsub_keeper.disconnect()
        if self.streams is not None:
            self.streams.stop()
        while not self._stop_now:
            now = time.monotonic()
            if waiting_unsubscribe and self.pubsub is not None:
                if self.pubsub.unsubscribed or pubsub_keeper is None or not pubsub_keeper.connected:
                    waiting_unsubscribe = False  # whatever Redis sent before confirming has been read
                elif now >= unsubscribe_by:
                    self.log.warning("redis did not confirm the unsubscribe within %g s", UNSUBSCRIBE_TIMEOUT)
                    waiting_unsubscribe = False
                if not waiting_unsubscribe and pubsub_keeper is not None:
                    pubsub_keeper.disconnect()
            if (not waiting_unsubscribe and d.idle) or now >= deadline:
                break
            self._turn(min(self._timeout(), max(0.0, deadline - now)))
        if not d.idle:
            d.close(f"{self._stop_reason}: drain ended" if not self._stop_now else "stopped at once")
        if self.streams is not None:
            self.streams.flush()
        if (
            self.heartbeat is not None
            and self._heartbeat_keeper is not None
            and self._heartbeat_keeper.connected
        ):
            with contextlib.suppress(redis.RedisError, OSError):  # stopping anyway: it expires on its own
                self.heartbeat.remove()
        c = d.counters
        self.log.info(
            "stopped · %d received · %d dispatched · %d completed · %d failed · %d retried · "
            "%d given up · %d dropped · %d rejected",
            self.received, c.dispatched, c.completed, c.failed, c.retried, c.given_up, c.dropped,
            self.rejected,
        )  # fmt: skip

    # Status.

    def _status_line(self) -> str:
        down = [k for k in self.keepers if k.down_since is not None]
        if self._stop_reason is not None:
            state = f"stopping ({self._stop_reason})"
        elif down:
            outage = time.monotonic() - min(k.down_since or 0 for k in down)
            state = f"redis unreachable for {outage:.0f} s, reconnecting"
        elif not self._ready:
            state = "connecting to redis for " + " and ".join(k.what for k in self.keepers)
        else:
            state = "subscribed to " + ", ".join(self.settings.channels + self.settings.streams)
        d, c = self.dispatcher, self.dispatcher.counters
        counts = (
            f"{c.dispatched} dispatched · {d.in_flight} in flight · {d.queued} queued · {c.not_ok} failed"
        )
        if self.streams is not None:
            lags = [lag for lag in self.streams.lag.values() if lag is not None]
            if lags:
                counts += f" · lag {sum(lags)}"
            counts += f" · {self.streams.dead} dead-lettered"
        return f"{state} · {counts}"

    def _snapshot(self) -> dict[str, str | int | float]:
        """What the heartbeat tells ``asyncphp status``."""
        d, c, s = self.dispatcher, self.dispatcher.counters, self.settings
        return {
            "host": socket.gethostname(), "pid": os.getpid(), "version": __version__, "started": self.started,
            "updated": time.time(), "channels": ",".join(s.channels), "streams": ",".join(s.streams),
            "group": s.group if s.streams else "", "pool": str(s.fpm_socket), "state": self._status_line(),
            "received": self.received, "rejected": self.rejected, **dataclasses.asdict(c),
            "in_flight": d.in_flight, "queued": d.queued,
            "dead_lettered": self.streams.dead if self.streams else 0,
            "last_error": self.last_error.text, "last_error_at": self.last_error.at,
        }  # fmt: skip

    def _update_status(self) -> None:
        status = self._status_line()
        if status != self._status:
            self._status = status
            self.notifier.status(status)


def _limits(settings: Settings) -> Limits:
    return Limits(settings.max_message_bytes, settings.max_nesting, settings.max_fields)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = load(args, env)
    except SettingsError as exc:
        print(f"asyncphp-daemon: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    log = configure_logging(settings.log_level, env)
    try:
        notifier = Notifier(env)
    except ServiceError as exc:
        # Like bad settings, a restart cannot fix a missing binding (RestartPreventExitStatus=2).
        log.error("%s", exc)
        return EXIT_BAD_SETTINGS
    return Daemon(settings, log, notifier, reload=lambda: load(args, env)).run()


if __name__ == "__main__":
    sys.exit(main())
