"""The daemon: Redis messages in, FastCGI requests out, one event loop, never waiting on a worker.

    source (Redis) ─▶ JSON ─▶ form body ─▶ FastCGI request ─▶ dispatcher ─▶ pool ─▶ log line

One thread, one poller: the Redis socket, the pool connections and a signal wakeup socket are
all watched together, and the loop's bounded wait also gives periodic work its rhythm (backoff
ends, Redis health pings, the STATUS line, watchdog pings). Signal handlers only record; the loop
acts.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import redis

from asyncphp.backoff import Backoff
from asyncphp.body import BadMessage, Limits, form_body
from asyncphp.dispatcher import Dispatcher, Job
from asyncphp.logfmt import preview
from asyncphp.poller import READ, Poller
from asyncphp.redisurl import redact
from asyncphp.request import RequestBuilder
from asyncphp.service import Notifier, ServiceError, SignalWakeup, configure_logging
from asyncphp.settings import RELOADABLE, Settings, SettingsError, load
from asyncphp.sources import Message, PubSubSource

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
            settings.fpm_socket,
            lambda job: self.requests.build(job.id, job.channel, job.body, job.attempts),
            log,
            max_in_flight=settings.max_in_flight,
            max_queued=settings.max_queued,
            max_queued_bytes=settings.max_queued_bytes,
            retry_for=settings.retry_for,
            request_timeout=settings.request_timeout,
        )
        self.received = 0
        self.rejected = 0
        self._last_job_id = 0
        self._source: PubSubSource | None = None
        self._redis_fd: int | None = None
        self._connect_at: float | None = 0.0  # when to (re)connect to Redis; None while connected
        self._redis_backoff = Backoff(0.1, 5.0, jitter=True)
        self._redis_down_since: float | None = None
        self._announced = False  # this connection's subscription has been confirmed and logged
        self._pinged_at: float | None = None
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
                if self._connect_at is not None and time.monotonic() >= self._connect_at:
                    self._connect()
                self._turn(self._timeout())
            self._drain()
        finally:
            self._disconnect()
            signals.close()
            self.poller.close()
        return EXIT_OK

    def _turn(self, timeout: float) -> None:
        """One pass of the loop: socket events, then whatever periodic work is due."""
        self.poller.poll(timeout)
        now = time.monotonic()
        self.dispatcher.pump()
        self._check_redis(now)
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
        if self._connect_at is not None:
            wakes.append(self._connect_at)
        if self.notifier.watchdog_interval:
            wakes.append(self._next_watchdog)
        pool_wake = self.dispatcher.wake_at()
        if pool_wake is not None:
            wakes.append(pool_wake)
        return max(0.0, min(wakes) - now)

    # Redis.

    def _connect(self) -> None:
        source = PubSubSource(
            self.settings.redis_url, self.settings.channels, self.settings.redis_password_file
        )
        try:
            where, version = source.open()
            fd = source.fileno()
        except (redis.RedisError, OSError) as exc:
            source.close()
            delay = self._redis_backoff.next()
            self._connect_at = time.monotonic() + delay
            self.log.error(
                "cannot connect to redis at %s: %s; retrying in %.1f s",
                redact(self.settings.redis_url), exc, delay,
            )  # fmt: skip
            return
        self._source, self._redis_fd, self._connect_at = source, fd, None
        self._pinged_at = None
        self._announced = False
        self.poller.watch(fd, READ, self._on_redis)
        self.log.info("Connected to redis on %s (%s)", where, version)

    def _disconnect(self) -> None:
        if self._redis_fd is not None:
            self.poller.forget(self._redis_fd)
            self._redis_fd = None
        if self._source is not None:
            self._source.close()
            self._source = None

    def _lost_redis(self, reason: str) -> None:
        # Pub/sub cannot replay what was published while we were away: the outage is logged with
        # its length once we are back, so the gap is visible.
        self._disconnect()
        now = time.monotonic()
        self._redis_down_since = self._redis_down_since or now
        delay = self._redis_backoff.next()
        self._connect_at = now + delay
        self.log.error("lost the connection to redis: %s; reconnecting in %.1f s", reason, delay)
        self._update_status()

    def _check_redis(self, now: float) -> None:
        source = self._source
        if source is None or self._stop_reason is not None:
            return
        if self._pinged_at is not None and source.last_read > self._pinged_at:
            self._pinged_at = None  # it answered
        interval = self.settings.redis_health_interval
        if self._pinged_at is None and now - source.last_read > interval:
            try:
                source.ping()
            except (redis.RedisError, OSError) as exc:
                self._lost_redis(str(exc))
                return
            self._pinged_at = now
        elif self._pinged_at is not None and now - self._pinged_at > interval:
            self._lost_redis(f"no answer to PING within {interval:g} s")

    def _on_redis(self, mask: int) -> None:
        source = self._source
        assert source is not None
        try:
            for message in source.read():
                self._on_message(message)
        except (redis.RedisError, OSError) as exc:
            self._lost_redis(str(exc) or type(exc).__name__)
            return
        if not self._announced and source.confirmed and self._stop_reason is None:
            self._subscribed()

    def _subscribed(self) -> None:
        self._announced = True
        self._redis_backoff.reset()
        channels = ", ".join(self.settings.channels)
        if self._redis_down_since is not None:
            outage = time.monotonic() - self._redis_down_since
            self._redis_down_since = None
            self.log.warning("Resubscribed to %s after a %.1f s redis outage", channels, outage)
            self._update_status()
            return
        self._ready = True
        self.log.info("Subscribed to %s", channels)
        self.notifier.ready(self._status_line())

    def _on_message(self, message: Message) -> None:
        self.received += 1
        try:
            body = form_body(message.payload, self.limits)
        except Exception as exc:
            self.rejected += 1
            reason = (
                str(exc) if isinstance(exc, BadMessage) else f"cannot encode it ({type(exc).__name__}: {exc})"
            )
            self.log.warning(
                "skipped a message on %s: %s; message %s", message.channel, reason, preview(message.payload),
                extra={"ASYNCPHP_CHANNEL": message.channel},
            )  # fmt: skip
            return
        self._last_job_id += 1
        self.dispatcher.submit(Job(self._last_job_id, message.channel, body, time.monotonic()))

    # Signals and lifecycle.

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
        self.dispatcher.max_in_flight = self.settings.max_in_flight
        self.dispatcher.max_queued = self.settings.max_queued
        self.dispatcher.max_queued_bytes = self.settings.max_queued_bytes
        self.dispatcher.retry_for = self.settings.retry_for
        self.dispatcher.request_timeout = self.settings.request_timeout
        # WARNING, so that the answer to an operator's SIGHUP shows whatever the log level.
        self.log.warning("SIGHUP: settings reloaded; changed: %s", ", ".join(applied) or "nothing")
        if ignored:
            self.log.warning("SIGHUP: %s changed but take effect only after a restart", ", ".join(ignored))

    def _drain(self) -> None:
        """Stop taking messages, then let queued and in-flight jobs finish, up to drain_timeout or a
        second signal; what is left is logged job by job."""
        d = self.dispatcher
        self.notifier.stopping(f"stopping: {self._stop_reason} · {d.in_flight} in flight · {d.queued} queued")
        self.log.info("stopping (%s): %d in flight, %d queued", self._stop_reason, d.in_flight, d.queued)
        deadline = time.monotonic() + self.settings.drain_timeout
        unsubscribe_by = time.monotonic() + UNSUBSCRIBE_TIMEOUT
        self._connect_at = None  # no reconnecting while stopping
        if self._source is not None:
            try:
                self._source.unsubscribe()
            except (redis.RedisError, OSError):
                self._disconnect()
        while not self._stop_now:
            now = time.monotonic()
            if self._source is not None and self._source.unsubscribed:
                self._disconnect()  # whatever Redis sent before confirming has been read
            elif self._source is not None and now >= unsubscribe_by:
                self.log.warning("redis did not confirm the unsubscribe within %g s", UNSUBSCRIBE_TIMEOUT)
                self._disconnect()
            if (self._source is None and d.idle) or now >= deadline:
                break
            self._turn(min(self._timeout(), max(0.0, deadline - now)))
        if not d.idle:
            d.close(f"{self._stop_reason}: drain ended" if not self._stop_now else "stopped at once")
        c = d.counters
        self.log.info(
            "stopped · %d received · %d dispatched · %d completed · %d failed · %d retried · "
            "%d given up · %d dropped · %d rejected",
            self.received, c.dispatched, c.completed, c.failed, c.retried, c.given_up, c.dropped,
            self.rejected,
        )  # fmt: skip

    # Status.

    def _status_line(self) -> str:
        channels = ", ".join(self.settings.channels)
        if self._stop_reason is not None:
            state = f"stopping ({self._stop_reason})"
        elif self._redis_down_since is not None:
            state = f"redis unreachable for {time.monotonic() - self._redis_down_since:.0f} s, reconnecting"
        elif not self._ready:
            state = f"connecting to redis for {channels}"
        else:
            state = f"subscribed to {channels}"
        d, c = self.dispatcher, self.dispatcher.counters
        failed = c.failed + c.given_up + c.dropped  # every job that did not end well
        counts = f"{c.dispatched} dispatched · {d.in_flight} in flight · {d.queued} queued · {failed} failed"
        return f"{state} · {counts}"

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
