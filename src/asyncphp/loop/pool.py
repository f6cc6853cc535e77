"""Hands jobs to the pool, one connection each, and reads every response in the background.

Nothing here blocks: sockets are non-blocking and watched by the daemon's poller, whose loop
calls back into the exchange that owns the socket. A worker's output is always read to the end,
because PHP aborts a script that writes to a connection its client has closed.

What to send next and what a failure means are decided in ``asyncphp.core.admission``; this
module carries it out (sockets, the log, the job's origin).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable

from asyncphp.core.admission import Admission, End, Limits, Retry, Verdict
from asyncphp.core.jobs import Counters, Failure, Job, Outcome, Result
from asyncphp.core.outcome import Refused, result_of
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.poller import READ, WRITE, Poller
from asyncphp.loop.story import Story
from asyncphp.settings import PoolAddress
from asyncphp.wire.fastcgi import FastCGIError, ResponseParser

READ_SIZE = 65536
PROBE_TIMEOUT = 2.0  # seconds for a probe's connect (a TCP pool behind a black hole)


IN_PROGRESS = "in progress"


def connect(sock: socket.socket, address: PoolAddress) -> str:
    """Start a non-blocking connect: "" when the pool accepted it, ``IN_PROGRESS`` when (TCP) the
    outcome comes as writability (then see :func:`connected`), else why it failed."""
    try:
        sock.connect(address.address)
    except BlockingIOError as exc:
        # On a unix socket EAGAIN means the pool's listen backlog is full.
        return IN_PROGRESS if exc.errno == errno.EINPROGRESS else "listen backlog full"
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def connected(sock: socket.socket) -> str:
    """After an ``IN_PROGRESS`` connect made the socket writable: "" if it was accepted, else why not."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return errno.errorcode.get(err, str(err)) if err else ""


class Exchange:
    """One job's connection: connect, send the request, read the response to its end."""

    __slots__ = ("_answered", "_connected", "_owner", "_parser", "_pending", "_sock", "_watching", "job",
                 "started")  # fmt: skip

    def __init__(self, job: Job, request: bytes, owner: Dispatcher) -> None:
        self.job = job
        self.started = time.monotonic()
        self._owner = owner
        self._pending = request
        self._watching = 0  # the poller events registered for the socket, 0 if none
        self._connected = False
        self._answered = False  # a byte of the response has arrived: the worker has run
        self._parser = ResponseParser()
        self._sock = socket.socket(owner.address.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)

    def start(self) -> None:
        error = connect(self._sock, self._owner.address)
        if error == IN_PROGRESS:
            self._watch(WRITE)
        else:
            self._on_connect(error)

    def _on_connect(self, error: str) -> None:
        if error:
            self.fail(Failure.UNREACHABLE, f"cannot connect to {self._owner.address}: {error}")
            return
        self._connected = True
        self._owner.on_connected()
        self._send()

    def _watch(self, events: int) -> None:
        # Registered only once there is something to wait for: a unix socket usually takes the
        # whole request at once, so the first registration is for the answer.
        if events != self._watching:
            self._owner.poller.watch(self._sock.fileno(), events, self)
            self._watching = events

    def __call__(self, mask: int) -> None:
        """The poller's callback: the socket is ready for what this exchange waits on."""
        if not self._connected:
            self._on_connect(connected(self._sock))
        elif self._pending:
            self._send()
        else:
            self._receive()

    def _send(self) -> None:
        try:
            sent = self._sock.send(self._pending)
        except BlockingIOError:
            self._watch(WRITE)
            return
        except OSError as exc:
            self.fail(Failure.LOST, f"cannot send the request: {exc.strerror or exc}")
            return
        if sent < len(self._pending):
            self._pending = self._pending[sent:]
            self._watch(WRITE)
            return
        self._pending = b""
        self._watch(READ)
        self._owner.on_sent(self.job)

    def _receive(self) -> None:
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
            self.fail(Failure.BROKEN, f"the pool's answer is not FastCGI: {exc}")
            return
        if response.complete:
            self.close()
            elapsed = time.monotonic() - self.started
            try:
                result = result_of(response, elapsed)
            except Refused as exc:
                self._owner.on_failed(self, Failure.REFUSED, str(exc))
                return
            self._owner.on_answered(self, result)

    def _lost(self, what: str) -> None:
        if self._answered:
            self.fail(
                Failure.BROKEN, f"{what} after the worker began to answer: it ran, with an unknown outcome"
            )
        else:
            self.fail(Failure.LOST, f"{what} before any answer")

    def time_out(self, timeout: float) -> None:
        """No complete answer within ``timeout`` seconds: end it as what it had got to."""
        if not self._connected:
            self.fail(Failure.UNREACHABLE, f"the pool did not accept the connection within {timeout:g} s")
        elif self._pending:
            self.fail(Failure.LOST, f"the pool did not take the request within {timeout:g} s")
        else:
            self.fail(
                Failure.BROKEN, f"no complete answer within {timeout:g} s; the worker may still be running"
            )

    @property
    def sent(self) -> bool:
        """True once the whole request is with the pool."""
        return self._connected and not self._pending

    def fail(self, failure: Failure, reason: str) -> None:
        """End this exchange without a complete response."""
        self.close()
        self._owner.on_failed(self, failure, reason)

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        if self._watching:
            self._owner.poller.forget(self._sock.fileno(), closing=True)
            self._watching = 0
        self._sock.close()


class Probe:
    """A connection opened only to learn whether the pool accepts connections again, closed as
    soon as it is accepted (see :meth:`Admission.probe`)."""

    def __init__(self, owner: Dispatcher) -> None:
        self._owner = owner
        self.started = time.monotonic()
        self._sock = socket.socket(owner.address.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)

    def start(self) -> None:
        error = connect(self._sock, self._owner.address)
        if error == IN_PROGRESS:
            self._owner.poller.watch(self._sock.fileno(), WRITE, self)
        else:
            self._done(error)

    def __call__(self, mask: int) -> None:
        self._done(connected(self._sock))

    def _done(self, error: str) -> None:
        if self._sock.fileno() < 0:
            return  # timed out already
        self._owner.poller.forget(self._sock.fileno(), closing=True)
        self._sock.close()
        self._owner.on_probed(self, error)

    def time_out(self, timeout: float) -> None:
        self._done(f"no answer to connect within {timeout:g} s")


class Dispatcher:
    """Feeds the pool what :class:`Admission` lets through, one connection per job, and logs one
    line per job's outcome; ``ended`` hears how each job ended, once. Jobs the pool could not be
    reached for are first offered to ``keep``, which returns those it did not take instead."""

    def __init__(
        self,
        poller: Poller,
        address: PoolAddress,
        build: Callable[[Job], bytes],
        ended: Callable[[Job, Result], None],
        keep: Callable[[list[Job]], list[Job]],
        counters: Counters,
        metrics: Metrics,
        log: logging.Logger,
        story: Story,
    ) -> None:
        self.poller = poller
        self.address = address
        self.admission = Admission(Limits())
        self.request_timeout = 0.0
        self._build = build
        self._ended = ended
        self._keep = keep
        self._counters = counters
        self._metrics = metrics
        self._log = log
        self._story = story
        self._open: set[Exchange] = set()
        self._probes: list[Probe] = []  # at most one
        self._pumping = False
        self.on_connected = self.admission.reached  # an exchange's connection was accepted

    def configure(self, limits: Limits, request_timeout: float) -> None:
        """Take the limits that may change on SIGHUP (the pool's address does not)."""
        self.admission.limits = limits
        self.request_timeout = request_timeout

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def queued(self) -> int:
        return self.admission.queued

    @property
    def idle(self) -> bool:
        return self.admission.idle

    @property
    def queued_bytes(self) -> int:
        return self.admission.queued_bytes

    @property
    def free(self) -> int:
        """Request slots no job is waiting for (a durable source reads :attr:`readable`)."""
        return self.admission.free

    @property
    def readable(self) -> int:
        """Entries a durable source may read now (see :attr:`Admission.readable`)."""
        return self.admission.readable

    @property
    def reachable(self) -> bool:
        return self.admission.reachable

    def has_room(self, size: int) -> bool:
        return self.admission.has_room(size, time.monotonic())

    def submit(self, job: Job) -> None:
        """Take ``job`` (after :meth:`has_room`) and start what can start."""
        self.admission.offer(job)
        self.pump()

    def pump(self) -> None:
        """Give up what has waited out its ``retry_for``; start queued jobs while slots are free."""
        if self._pumping:
            return  # called back from a start that failed at once: the loop below goes on
        self._pumping = True
        try:
            now = time.monotonic()
            ends = self.admission.expire(now)
            if ends:
                self._give_up(ends, now)
            # start() yields one job at a time and sees what became of the last one: a job
            # requeued at once is yielded again, a pause stops it.
            for job in self.admission.start(now):
                try:
                    exchange = Exchange(job, self._build(job), self)
                except OSError as exc:  # out of file descriptors, say: like a pool that cannot be reached
                    self._failed(job, Failure.UNREACHABLE, f"cannot open a socket: {exc.strerror or exc}")
                    continue
                self._open.add(exchange)
                exchange.start()
        finally:
            self._pumping = False

    def probe(self) -> None:
        """Work waits elsewhere for the pool (a spill file): see whether it is back, when due."""
        now = time.monotonic()
        if not self.admission.probe(now):
            return
        try:
            probe = Probe(self)
        except OSError as exc:
            self.admission.probe_failed(f"cannot open a socket: {exc.strerror or exc}", now)
            return
        self._probes.append(probe)
        probe.start()

    def on_probed(self, probe: Probe, error: str) -> None:
        self._probes.remove(probe)
        if error:
            self.admission.probe_failed(f"cannot connect to {self.address}: {error}", time.monotonic())
        else:
            self.admission.reached()
            self._log.warning("the pool at %s accepts connections again", self.address)

    def take_queued(self, which: Callable[[Job], bool]) -> list[Job]:
        return self.admission.take_queued(which)

    def wake_at(self) -> float:
        """When :meth:`pump` has work that no socket event will trigger (``inf``: none)."""
        return self.admission.wake_at(time.monotonic())

    def expire(self) -> None:
        """End requests that have had no complete answer for ``request_timeout`` seconds, so a
        peer that never answers cannot hold a slot forever."""
        for probe in [p for p in self._probes if time.monotonic() - p.started > PROBE_TIMEOUT]:
            probe.time_out(PROBE_TIMEOUT)
        if not self.request_timeout:
            return
        limit = time.monotonic() - self.request_timeout
        for exchange in [e for e in self._open if e.started < limit]:
            exchange.time_out(self.request_timeout)

    def close(self) -> tuple[list[Job], list[Job]]:
        """Stop: close every connection; returns the jobs the pool has (still running there) and
        those it never got, oldest first. Their outcome is the caller's to report."""
        running = sorted((e.job for e in self._open if e.sent), key=lambda job: job.id)
        unsent = sorted((e.job for e in self._open if not e.sent), key=lambda job: job.id)
        for exchange in self._open:
            exchange.close()
        self._open.clear()
        for probe in list(self._probes):
            probe.time_out(0)
        return running, unsent + self.admission.clear()

    # Called by exchanges.

    def on_sent(self, job: Job) -> None:
        if not job.counted:
            job.counted = True
            self._counters.dispatched += 1
            self._metrics.dispatched(job.channel)
        self._story.dispatched(job)

    def on_answered(self, exchange: Exchange, result: Result) -> None:
        self._open.discard(exchange)
        self.admission.answered(result.seconds)
        job = exchange.job
        self._story.answered(job, result)
        self._ended(job, result)
        self.pump()

    def on_failed(self, exchange: Exchange, failure: Failure, reason: str) -> None:
        self._open.discard(exchange)
        if exchange.sent:  # a hung or killed job counts as long, so no read-ahead piles up behind it
            self.admission.took(time.monotonic() - exchange.started)
        self._failed(exchange.job, failure, reason)

    def _failed(self, job: Job, failure: Failure, reason: str) -> None:
        now = time.monotonic()
        verdict: Verdict = self.admission.failed(job, failure, reason, now)
        if isinstance(verdict, Retry):
            job = verdict.job
            self._counters.retried += 1
            self._metrics.retried(job.channel)
            self._story.retrying(job, reason, verdict.attempt, verdict.delay)
            if not verdict.delay:  # else dispatching is paused: the loop wakes at the backoff's end
                self.pump()
            return
        if verdict.result.outcome is Outcome.UNDELIVERED:
            self._give_up([verdict], now)
        else:
            job = verdict.job
            self._story.failed(job, verdict.result.reason)
            self._ended(job, verdict.result)
        self.pump()

    def _give_up(self, ends: list[End], now: float) -> None:
        """Jobs whose retry_for has run out, oldest first: offered to ``keep`` together (a spill
        file keeps them in order), the rest given up."""
        left = {id(job) for job in self._keep([end.job for end in ends])}
        for end in ends:
            job = end.job
            if id(job) not in left:
                continue  # kept elsewhere (a spill file) until the pool can be reached again
            seconds = now - max(job.received, self.admission.out_since)
            self._story.given_up(job, seconds, self.admission.limits.retry_for, end.result.reason)
            self._ended(job, end.result)
