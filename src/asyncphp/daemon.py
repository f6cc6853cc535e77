"""The daemon: Redis messages in, FastCGI requests out, one event loop, never waiting on a worker.

source (Redis) ─▶ JSON ─▶ form body ─▶ FastCGI request ─▶ dispatcher ─▶ pool ─▶ log line
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import time
from collections.abc import Mapping, Sequence

import redis

from asyncphp.body import BadMessage, form_body
from asyncphp.dispatcher import Dispatcher, Job
from asyncphp.logfmt import preview
from asyncphp.redisurl import redact
from asyncphp.request import RequestBuilder
from asyncphp.service import Notifier, ServiceError, SignalWakeup, configure_logging
from asyncphp.settings import Settings, SettingsError, load
from asyncphp.sources import Message, PubSubSource

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_SETTINGS = 2

TICK = 1.0  # seconds: the loop wakes at least this often for stop flags and status
DRAIN_TIMEOUT = 10.0  # seconds to let in-flight jobs finish at shutdown


class Daemon:
    def __init__(self, settings: Settings, log: logging.Logger, notifier: Notifier) -> None:
        self.settings = settings
        self.log = log
        self.notifier = notifier
        self.selector = selectors.DefaultSelector()
        self.source = PubSubSource(settings.redis_url, settings.channels)
        self.requests = RequestBuilder(settings.worker_script)
        self.dispatcher = Dispatcher(self.selector, settings.fpm_socket, log)
        self.received = 0
        self.rejected = 0
        self._ready = False
        self._redis_fd: int | None = None
        self._stop_reason: str | None = None
        self._stop_now = False
        self._exit_status = EXIT_OK

    def run(self) -> int:
        signals = SignalWakeup((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        self.selector.register(signals, selectors.EVENT_READ, lambda mask: self._on_signals(signals))
        try:
            self._serve()
            self._drain()
        finally:
            self.source.close()
            signals.close()
            self.selector.close()
        return self._exit_status

    def _serve(self) -> None:
        try:
            where, version = self.source.open()
            self._redis_fd = self.source.fileno()
            self.selector.register(self._redis_fd, selectors.EVENT_READ, self._on_redis)
        except (redis.RedisError, OSError) as exc:
            self._fail(f"cannot subscribe at {redact(self.settings.redis_url)}: {exc}")
            return
        self.log.info("Connected to redis on %s (redis %s)", where, version)
        while self._stop_reason is None:
            for key, mask in self.selector.select(0 if self.source.buffered else TICK):
                key.data(mask)

    def _on_redis(self, mask: int) -> None:
        try:
            for message in self.source.read():
                self._on_message(message)
        except (redis.RedisError, OSError) as exc:
            # Pub/sub cannot replay what was published meanwhile: exit non-zero so the service
            # manager restarts us and the gap shows in the journal.
            self._fail(f"lost the connection to redis: {exc}")
            return
        if not self._ready and self.source.confirmed:
            self._ready = True
            channels = ", ".join(self.source.channels)
            self.log.info("Subscribed to %s", channels)
            self.notifier.ready(f"subscribed to {channels}")

    def _on_message(self, message: Message) -> None:
        self.received += 1
        try:
            body = form_body(message.payload)
        except BadMessage as exc:
            self.rejected += 1
            self.log.warning(
                "skipped a message on %s: %s; message %s", message.channel, exc, preview(message.payload)
            )
            return
        job = Job(self.received, message.channel, body)
        self.dispatcher.submit(job, self.requests.build(job.id, job.channel, body))

    def _on_signals(self, signals: SignalWakeup) -> None:
        for sig in signals.received():
            if sig == signal.SIGHUP:
                self.log.info("SIGHUP: nothing to reload")
            elif self._stop_reason is None:
                self._stop_reason = sig.name
            else:
                self._stop_now = True

    def _fail(self, reason: str) -> None:
        self.log.error("%s", reason)
        self._stop_reason = reason
        self._exit_status = EXIT_FAILURE

    def _drain(self) -> None:
        """Stop taking messages and let in-flight jobs end, up to DRAIN_TIMEOUT or a second signal."""
        self.notifier.stopping(f"stopping: {self._stop_reason}")
        if self._redis_fd is not None:
            self.selector.unregister(self._redis_fd)
            self._redis_fd = None
        self.source.close()
        d = self.dispatcher
        self.log.info("stopping (%s): waiting for %d job(s) in flight", self._stop_reason, d.in_flight)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while d.in_flight and not self._stop_now and time.monotonic() < deadline:
            for key, mask in self.selector.select(min(TICK, deadline - time.monotonic())):
                key.data(mask)
        d.close()
        self.log.info(
            "stopped · %d received · %d dispatched · %d completed · %d failed · %d rejected",
            self.received,
            d.dispatched,
            d.completed,
            d.failed,
            self.rejected,
        )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        settings = load(argv, env)
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
    return Daemon(settings, log, notifier).run()


if __name__ == "__main__":
    sys.exit(main())
