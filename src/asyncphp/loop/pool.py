"""Hands jobs to the pool, one connection each, and reads every response in the background.

Nothing here blocks: sockets are non-blocking and watched by the daemon's poller, whose loop
calls back into the exchange that owns the socket. A worker's output is always read to the
end, because PHP aborts a script that writes to a connection its client has closed.

At most ``max_in_flight`` requests are open, matching the pool's children, so a burst waits here
in a bounded queue instead of overflowing php-fpm's listen backlog. When the pool cannot take a
job (backlog full, refused, socket missing while it restarts, connection reset, OVERLOADED), the
job goes back to the head of the queue and dispatching pauses with capped exponential backoff;
a job is given up only after the pool has failed it for ``retry_for`` seconds. A connection lost
after the worker began to answer is not retried: the worker ran, and its outcome is unknown.
Retried requests carry ``ASYNCPHP_ATTEMPT``, so a worker can tell a second run from a first.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asyncphp.core.backoff import Backoff
from asyncphp.core.jobs import Job, Outcome, Result
from asyncphp.logfmt import preview
from asyncphp.loop.poller import READ, WRITE, Poller
from asyncphp.settings import PoolAddress, Settings
from asyncphp.wire.fastcgi import FCGI_REQUEST_COMPLETE, FastCGIError, Response, ResponseParser

if TYPE_CHECKING:  # prometheus_client is only imported when metrics are on
    from asyncphp.ops.metrics import Metrics

READ_SIZE = 65536
STDERR_PREVIEW = 600  # characters: enough for a PHP fatal error with its file and line
BACKOFF_FIRST = 0.05  # seconds
BACKOFF_CAP = 2.0  # seconds: a pool back from a restart is used again within this
UNDONE_LOGGED = 1000  # jobs listed one by one when a drain leaves them undone


class Exchange:
    """One job's connection: connect, send the request, read the response to its end."""

    __slots__ = (
        "_answered",
        "_connecting",
        "_owner",
        "_parser",
        "_pending",
        "_sock",
        "_watching",
        "job",
        "started",
    )

    def __init__(self, job: Job, request: bytes, owner: Dispatcher) -> None:
        self.job = job
        self.started = time.monotonic()
        self._owner = owner
        self._pending = request
        self._watching = 0  # the poller events registered for the socket, 0 if none
        self._connecting = False
        self._answered = False  # a byte of the response has arrived: the worker has run
        self._parser = ResponseParser()
        self._sock: socket.socket | None = None

    def start(self, address: PoolAddress) -> None:
        try:
            sock = self._sock = socket.socket(address.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            sock.connect(address.address)
        except BlockingIOError as exc:
            if exc.errno != errno.EINPROGRESS:
                # On a unix socket EAGAIN means the pool's listen backlog is full.
                self.fail(f"cannot connect to {address}: listen backlog full", retry=True)
                return
            self._connecting = True  # TCP: the outcome comes as writability
        except OSError as exc:
            self.fail(f"cannot connect to {address}: {exc.strerror or exc}", retry=True)
            return
        if self._connecting:
            self._watch(WRITE)
        else:
            self._send()

    def _watch(self, events: int) -> None:
        # Registered only once there is something to wait for: a unix socket usually takes the
        # whole request at once, so the first registration is for the answer.
        assert self._sock is not None
        if events != self._watching:
            self._owner.poller.watch(self._sock.fileno(), events, self)
            self._watching = events

    def __call__(self, mask: int) -> None:
        """The poller's callback: the socket is ready for what this exchange waits on."""
        if self._pending:
            self._send()
        else:
            self._receive()

    def _send(self) -> None:
        assert self._sock is not None
        try:
            if self._connecting:
                self._connecting = False
                err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect failed: {errno.errorcode.get(err, err)}")
            sent = self._sock.send(self._pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"cannot send the request: {exc.strerror or exc}", retry=True)
            return
        if sent < len(self._pending):
            self._pending = self._pending[sent:]
            self._watch(WRITE)
            return
        self._pending = b""
        self._watch(READ)
        self._owner.on_sent(self)

    def _receive(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc.strerror or str(exc))
            return
        if not data:
            self._lost("the pool closed the connection")
            return
        self._answered = True
        try:
            response = self._parser.feed(data)
        except FastCGIError as exc:
            self.fail(f"the pool's answer is not FastCGI: {exc}", retry=False)
            return
        if response.complete:
            self.close()
            self._owner.on_finished(self, response)

    def _lost(self, what: str) -> None:
        if self._answered:
            self.fail(
                f"{what} after the worker began to answer: it ran, with an unknown outcome", retry=False
            )
        else:
            self.fail(f"{what} before any answer", retry=True)

    @property
    def sent(self) -> bool:
        """True once the whole request is with the pool."""
        return not self._pending

    def fail(self, reason: str, retry: bool) -> None:
        """End this exchange without a complete response; ``retry`` if the job never ran."""
        self.close()
        self._owner.on_failed(self, reason, retry)

    def close(self) -> None:
        if self._sock is None:
            return
        if self._watching:
            self._owner.poller.forget(self._sock.fileno(), closing=True)
            self._watching = 0
        self._sock.close()
        self._sock = None


@dataclass
class Counters:
    dispatched: int = 0  # jobs whose request was written whole to the pool (first attempts)
    completed: int = 0  # responses that ended well
    failed: int = 0  # the worker ran and failed, or the pool's answer made no sense
    retried: int = 0  # attempts the pool could not take, tried again
    given_up: int = 0  # jobs the pool could not take for retry_for seconds
    dropped: int = 0  # jobs refused because the queue was full

    @property
    def not_ok(self) -> int:
        """Every job that did not end well."""
        return self.failed + self.given_up + self.dropped


class Dispatcher:
    """Feeds the pool at most ``max_in_flight`` jobs at a time, queues the rest, retries pool
    faults with backoff, and logs one line per job's outcome."""

    def __init__(
        self,
        poller: Poller,
        settings: Settings,
        build: Callable[[Job], bytes],
        settle: Callable[[Job, Result], None],
        log: logging.Logger,
    ) -> None:
        self.poller = poller
        self.configure(settings)
        self.metrics: Metrics | None = None
        self._settle = settle
        self._queued_bytes = 0
        self.counters = Counters()
        self._address = settings.fpm_socket
        self._build = build
        self._log = log
        self._open: set[Exchange] = set()
        self._queue: deque[Job] = deque()
        self._backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        self._paused_until = 0.0
        self._outage_since: float | None = None  # first pool fault since the last good response

    def configure(self, settings: Settings) -> None:
        """Take the limits that may change on SIGHUP (the pool's address does not)."""
        self.max_in_flight = settings.max_in_flight
        self.max_queued = settings.max_queued
        self.max_queued_bytes = settings.max_queued_bytes
        self.retry_for = settings.retry_for
        self.request_timeout = settings.request_timeout

    @property
    def in_flight(self) -> int:
        return len(self._open)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._open and not self._queue

    def wake_at(self) -> float | None:
        """When :meth:`pump` has work that no socket event will trigger: the end of a backoff."""
        if self._queue and self._paused_until > time.monotonic():
            return self._paused_until
        return None

    def submit(self, job: Job) -> None:
        """Take ``job``: start it now if a slot is free, else queue it (or drop it, loudly, when
        the queue is full)."""
        self._enqueue(job)
        self.pump()
        if len(self._queue) > self.max_queued or self._queued_bytes > self.max_queued_bytes:
            dropped = self._queue.pop()  # the job just taken: older ones keep their place
            self._queued_bytes -= len(dropped.body)
            self.counters.dropped += 1
            self._log_job(
                logging.ERROR, dropped,
                "queue full (%d queued, %d bytes, %d in flight): dropped job %d on %s (%d dropped so far); "
                "message %s",
                len(self._queue), self._queued_bytes, len(self._open), dropped.id, dropped.channel,
                self.counters.dropped, preview(dropped.body),
            )  # fmt: skip
            self._settle(dropped, Result(Outcome.DROPPED, "the queue was full"))

    def pump(self) -> None:
        """Start queued jobs while slots are free and the pool is not being backed off from."""
        now = time.monotonic()
        if self._outage_since is not None:
            self._give_up_expired(now)
        if now < self._paused_until:
            return
        while self._queue and len(self._open) < self.max_in_flight:
            job = self._dequeue()
            job.attempts += 1
            exchange = Exchange(job, self._build(job), self)
            self._open.add(exchange)
            exchange.start(self._address)
            if now < self._paused_until:  # that start failed at once: back off
                return

    def expire(self) -> None:
        """End requests that have had no complete answer for ``request_timeout`` seconds, so a
        peer that never answers cannot hold a slot forever."""
        if not self.request_timeout:
            return
        limit = time.monotonic() - self.request_timeout
        for exchange in [e for e in self._open if e.started < limit]:
            if exchange.sent:
                reason = (
                    f"no complete answer within {self.request_timeout:g} s; the worker may still be running"
                )
            else:
                reason = f"the pool did not take the request within {self.request_timeout:g} s"
            exchange.fail(reason, retry=not exchange.sent)

    def close(self, reason: str) -> None:
        """Stop: log each job whose outcome will never be known or that was never sent."""
        running = sorted((e.job for e in self._open if e.sent), key=lambda job: job.id)
        unsent = sorted((e.job for e in self._open if not e.sent), key=lambda job: job.id) + list(self._queue)
        for exchange in list(self._open):
            exchange.close()
        self._open.clear()
        self._queue.clear()
        self._queued_bytes = 0
        for job in running:
            # The pool has it; with ignore_user_abort on (commands.conf) it runs to its end.
            self._log_job(
                logging.WARNING, job,
                "job %d on %s still running in the pool (%s): its outcome will not be logged",
                job.id, job.channel, reason,
            )  # fmt: skip
        for job in running + unsent:
            self._settle(job, Result(Outcome.ABANDONED, reason))
        for job in unsent[:UNDONE_LOGGED]:
            self._log_job(
                logging.ERROR, job, "job %d on %s left undone (%s); message %s",
                job.id, job.channel, reason, preview(job.body),
            )  # fmt: skip
        if len(unsent) > UNDONE_LOGGED:
            self._log.error("%d more jobs left undone (%s)", len(unsent) - UNDONE_LOGGED, reason)

    def _enqueue(self, job: Job, front: bool = False) -> None:
        if front:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)
        self._queued_bytes += len(job.body)

    def _dequeue(self) -> Job:
        job = self._queue.popleft()
        self._queued_bytes -= len(job.body)
        return job

    # Called by exchanges.

    def on_sent(self, exchange: Exchange) -> None:
        job = exchange.job
        if job.attempts == 1:
            self.counters.dispatched += 1
            if self.metrics is not None:
                self.metrics.dispatched(job.channel)
            self._log_job(logging.INFO, job, "Spawned process with ID: %d", job.id)
        else:
            self._log_job(logging.INFO, job, "Spawned process with ID: %d (attempt %d)", job.id, job.attempts)

    def on_finished(self, exchange: Exchange, response: Response) -> None:
        self._open.discard(exchange)
        job = exchange.job
        if response.protocol_status != FCGI_REQUEST_COMPLETE:
            # The pool refused the request (OVERLOADED, CANT_MPX_CONN, UNKNOWN_ROLE): it never ran.
            self._retry(exchange, f"the pool refused it (FastCGI protocol status {response.protocol_status})")
            return
        self._outage_since = None
        self._backoff.reset()
        elapsed_ms = (time.monotonic() - exchange.started) * 1000
        status = response.http_status
        problem = None
        if status >= 400:
            problem = "the worker failed"
        elif response.app_status:
            problem = f"the worker exited with status {response.app_status}"
        stderr = f"; stderr {preview(response.stderr, STDERR_PREVIEW)}" if response.stderr_bytes else ""
        if problem is None:
            self.counters.completed += 1
            self._settle(job, Result(Outcome.COMPLETED, status=status, seconds=elapsed_ms / 1000))
            self._log_job(
                logging.INFO, job, "job %d on %s: status %d in %.1f ms%s",
                job.id, job.channel, status, elapsed_ms, stderr, status=status, elapsed_ms=elapsed_ms,
            )  # fmt: skip
        else:
            self.counters.failed += 1
            self._log_job(
                logging.ERROR, job, "job %d on %s: status %d in %.1f ms, %s%s",
                job.id, job.channel, status, elapsed_ms, problem, stderr,
                status=status, elapsed_ms=elapsed_ms,
            )  # fmt: skip
            outcome = Outcome.REJECTED if 400 <= status < 500 else Outcome.FAILED
            self._settle(job, Result(outcome, problem, status, response.stderr, elapsed_ms / 1000))
        self.pump()

    def on_failed(self, exchange: Exchange, reason: str, retry: bool) -> None:
        self._open.discard(exchange)
        if retry:
            self._retry(exchange, reason)
            return
        job = exchange.job
        self.counters.failed += 1
        self._log_job(
            logging.ERROR,
            job,
            "job %d on %s failed: %s; message %s",
            job.id,
            job.channel,
            reason,
            preview(job.body),
        )
        self._settle(job, Result(Outcome.FAILED, reason))
        self.pump()

    def _retry(self, exchange: Exchange, reason: str) -> None:
        job = exchange.job
        job.last_error = reason
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        delay = self._backoff.next()
        self._paused_until = now + delay
        if self._deadline(job) < now:
            self._give_up(job, reason)
        else:
            self.counters.retried += 1
            if self.metrics is not None:
                self.metrics.retried(job.channel)
            self._enqueue(job, front=True)
            self._log_job(
                logging.WARNING, job, "job %d on %s: %s; attempt %d, retrying in %.2f s",
                job.id, job.channel, reason, job.attempts, delay,
            )  # fmt: skip
        # No pump: dispatching has just been paused; only the expiry of queued jobs is due.
        self._give_up_expired(now)

    def _deadline(self, job: Job) -> float:
        # A job's retry_for runs from the start of the pool's trouble, or from its arrival if later,
        # so jobs queued behind an outage are not each given a fresh minute in turn.
        assert self._outage_since is not None
        return max(job.received, self._outage_since) + self.retry_for

    def _give_up_expired(self, now: float) -> None:
        # Deadlines rise along the queue (jobs arrive in order), so expired ones are at its head.
        while self._queue and self._deadline(self._queue[0]) < now:
            job = self._dequeue()
            self._give_up(job, job.last_error or "the pool stayed unreachable")

    def _give_up(self, job: Job, reason: str) -> None:
        self.counters.given_up += 1
        self._log_job(
            logging.ERROR, job, "job %d on %s given up after %d attempt(s) over %.1f s: %s; message %s",
            job.id, job.channel, job.attempts, time.monotonic() - job.received, reason, preview(job.body),
        )  # fmt: skip
        self._settle(job, Result(Outcome.UNDELIVERED, reason))

    def _log_job(
        self, level: int, job: Job, msg: str, *args: object, status: int | None = None,
        elapsed_ms: float | None = None,
    ) -> None:  # fmt: skip
        # Checked first: the journal fields are work that a suppressed line (INFO under
        # log_level = WARNING, on the hot path) should not cost.
        if self._log.isEnabledFor(level):
            self._log.log(level, msg, *args, extra=_fields(job, status, elapsed_ms))


def _fields(job: Job, status: int | None = None, elapsed_ms: float | None = None) -> dict[str, object]:
    """Structured journal fields for a job's log line (ignored by a plain stderr handler)."""
    fields: dict[str, object] = {"ASYNCPHP_CHANNEL": job.channel, "ASYNCPHP_REQUEST_ID": job.id}
    if status is not None:
        fields["ASYNCPHP_STATUS"] = status
    if elapsed_ms is not None:
        fields["ASYNCPHP_DURATION_MS"] = round(elapsed_ms, 1)
    return fields
