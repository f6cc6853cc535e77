"""Admission: which job goes to the pool next, and what a failed request means for its job.

The pool is the scarce thing. At most ``max_in_flight`` requests are open; the rest wait here,
bounded in count and bytes. A failed request is one of three things (``Failure``), each with its
own budget:

- *the pool cannot be reached* (no socket, connection refused, backlog full): an outage of the
  pool, which ends the moment it accepts a connection again. A pool that accepts connections but
  refuses requests (FastCGI OVERLOADED and the like) is in an outage until it answers one.
  Dispatching pauses with backoff. A job is given up only when the pool has been out, without a
  break, for ``retry_for`` since the job arrived: time spent queued behind healthy slow jobs never
  counts, and a long outage does not hand each queued job a fresh ``retry_for`` in turn.
- *the request reached the pool and was lost before any answer* (a child killed mid-request): it
  may have run, so it is the job's own failed attempt, retried up to the job's ``max_attempt``
  whatever other jobs do; ``ASYNCPHP_ATTEMPT`` rises with it.
- *it ran, or may have, and its outcome is unknown*: it ends as failed, never retried.

Pure: the dispatcher (``asyncphp.loop.pool``) reports what happened with ``now`` and carries out
what comes back. Nothing here touches a socket or reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from asyncphp.core.backoff import Backoff
from asyncphp.core.jobs import Failure, Job, Outcome, Result

BACKOFF_FIRST = 0.05  # seconds
BACKOFF_CAP = 2.0  # seconds: a pool back from a restart is used again within this
HEALTHY = math.inf  # "unreachable since" while the pool is reachable: no deadline is ever reached
# A durable source reads ahead (see Admission.readable) what the pool runs in this many seconds, at
# most READ_AHEAD_WIDTHS times max_in_flight entries: for fast jobs, reads of a dozen entries instead of
# a few (12 % less daemon CPU per job, measured); for slow ones, none, so that other consumers of
# the group share them.
READ_AHEAD_SECONDS = 0.01
READ_AHEAD_WIDTHS = 3
RUNNING_MEAN_WEIGHT = 0.1  # how fast the figures of job durations and body sizes come down


@dataclass(frozen=True, slots=True)
class Limits:
    """What may change on SIGHUP."""

    max_in_flight: int = 5
    max_queued: int = 100_000
    max_queued_bytes: int = 256 << 20
    retry_for: float = 60.0


@dataclass(frozen=True, slots=True)
class Retry:
    """The job is back at the head of the queue; dispatching resumes in ``delay`` seconds."""

    job: Job
    attempt: int  # the attempt that failed
    delay: float


@dataclass(frozen=True, slots=True)
class End:
    """The job is over: hand ``result`` to its origin."""

    job: Job
    result: Result


Verdict = Retry | End


class Admission:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._queue: deque[Job] = deque()
        self._queued_bytes = 0
        self.in_flight = 0
        self._paused_until = 0.0
        self._backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        self.unreachable_since = HEALTHY  # ended by a connection accepted
        self._refusing_since = HEALTHY  # ended by a request answered
        self._outage_reason = ""  # why the pool could not take jobs, for those that never tried
        self._probing = False
        self.job_seconds = math.inf  # how long jobs take, by the recent ones (see took); unknown at first
        self._body_bytes = 0.0  # a recent large body's size, decaying: what read-ahead reckons with

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def idle(self) -> bool:
        return not self.in_flight and not self._queue

    @property
    def out_since(self) -> float:
        """Since when the pool has been unable to take jobs (unreachable, or refusing them);
        ``inf`` while it can."""
        return min(self.unreachable_since, self._refusing_since)

    @property
    def reachable(self) -> bool:
        """The pool accepts connections, as far as anyone knows."""
        return self.unreachable_since == HEALTHY

    @property
    def free(self) -> int:
        """Request slots no job is waiting for (a durable source reads :attr:`readable`)."""
        return self.limits.max_in_flight - self.in_flight - len(self._queue)

    @property
    def readable(self) -> int:
        """Entries a durable source may read now: enough for the free slots, and for some queued
        behind the running jobs when jobs are quick (see READ_AHEAD_SECONDS), so that the pool
        does not wait for a Redis round trip between them; asked for once the queue has fallen to
        half that, so that reads come in batches rather than one entry at a time."""
        width = self.limits.max_in_flight
        wanted = min(READ_AHEAD_WIDTHS * width, width * READ_AHEAD_SECONDS / max(self.job_seconds, 1e-6))
        # No more than half the queue's room, in count and (by the bodies seen so far) in bytes:
        # an entry read that the queue cannot take is only left pending for claim_idle.
        room = min(
            self.limits.max_queued - len(self._queue),
            (self.limits.max_queued_bytes - self._queued_bytes) // max(1, int(self._body_bytes)),
        )
        ahead = max(0, int(min(wanted, room // 2)))
        if len(self._queue) > ahead // 2:
            return 0
        return max(0, width + ahead - self.in_flight - len(self._queue))

    def has_room(self, size: int, now: float) -> bool:
        """Whether a new job of ``size`` bytes may be offered: a free slot it would take at once,
        or room in the queue."""
        if not self._queue and self.in_flight < self.limits.max_in_flight and now >= self._paused_until:
            return True
        return (
            len(self._queue) < self.limits.max_queued
            and self._queued_bytes + size <= self.limits.max_queued_bytes
        )

    def offer(self, job: Job) -> None:
        """Queue ``job`` (the caller asked :meth:`has_room` first)."""
        self._queue.append(job)
        self._queued_bytes += len(job.body)
        self._body_bytes = max(self._body_bytes * (1 - RUNNING_MEAN_WEIGHT), len(job.body))

    def expire(self, now: float, limit: int = 1000) -> list[End]:
        """Jobs whose ``retry_for`` of pool outage has run out, given up; at most ``limit`` at a
        time, so that a long queue given up at once cannot stall the loop (the rest follow next
        turn: :meth:`wake_at` says so)."""
        ended: list[End] = []
        if self.out_since == HEALTHY:
            return ended  # the pool takes jobs: no deadline runs (checked on every pump)
        while self._queue and len(ended) < limit and self._deadline(self._queue[0]) <= now:
            job = self._take()
            reason = job.last_error or self._outage_reason
            ended.append(End(job, Result(Outcome.UNDELIVERED, reason)))
        return ended

    def start(self, now: float) -> Iterator[Job]:
        """Jobs to send now, one at a time, as long as slots are free and dispatching is not
        paused. The caller reports each job's fate before asking for the next, so a job that
        cannot reach the pool pauses the rest, and one lost at once may come round again."""
        while self._queue and self.in_flight < self.limits.max_in_flight and now >= self._paused_until:
            self._paused_until = 0.0
            self.in_flight += 1
            yield self._take()

    def reached(self) -> None:
        """A connection to the pool was accepted: it can be reached again."""
        if self.unreachable_since == HEALTHY and not self._probing:
            return  # nothing to end: the common case, once per job
        self.unreachable_since = HEALTHY
        self._probing = False
        if self._refusing_since == HEALTHY:
            self._backoff.reset()
            self._paused_until = 0.0

    def probe(self, now: float) -> bool:
        """Whether to open a connection only to learn if the pool is back: during an outage with
        no job left to try it with (work waits elsewhere, in a spill file), once the backoff
        allows, one at a time. Without it the outage would never be seen to end."""
        if self.reachable or self._queue or self.in_flight or self._probing:
            return False
        if now < self._paused_until:
            return False
        self._probing = True
        return True

    def probe_failed(self, reason: str, now: float) -> None:
        self._probing = False
        self._outage_reason = reason
        self._paused_until = now + self._backoff.next()

    def answered(self, seconds: float) -> None:
        """A started job's request ended with a complete answer after ``seconds``: the pool takes
        jobs again."""
        self.in_flight -= 1
        self.took(seconds)
        if self._refusing_since != HEALTHY:
            self._refusing_since = HEALTHY
            self._backoff.reset()
            self._paused_until = 0.0

    def took(self, seconds: float) -> None:
        """A request the pool had ran for ``seconds``, answered or not (a timeout, a child killed):
        how long jobs take, for the read-ahead."""
        # Up at once, down gradually: a slow job stops the read-ahead at once, so that a switch from
        # quick jobs to slow ones does not leave entries queued here while other consumers idle.
        if self.job_seconds == math.inf or seconds > self.job_seconds:
            self.job_seconds = seconds
        else:
            self.job_seconds += RUNNING_MEAN_WEIGHT * (seconds - self.job_seconds)

    def failed(self, job: Job, failure: Failure, reason: str, now: float) -> Verdict:
        """A started job's request ended without a complete answer: retry it, or end it."""
        self.in_flight -= 1
        job.last_error = reason
        if failure in (Failure.UNREACHABLE, Failure.REFUSED):
            self._outage_reason = reason
            if failure is Failure.UNREACHABLE and self.unreachable_since == HEALTHY:
                self.unreachable_since = now
            if failure is Failure.REFUSED and self._refusing_since == HEALTHY:
                self._refusing_since = now
            delay = self._backoff.next()
            self._paused_until = now + delay
            if self._deadline(job) <= now:
                return End(job, Result(Outcome.UNDELIVERED, reason))
            self._requeue(job)
            return Retry(job, job.attempt, delay)
        if failure is Failure.LOST and job.attempt < job.max_attempt:
            job.attempt += 1
            self._requeue(job)
            return Retry(job, job.attempt - 1, 0.0)
        if failure is Failure.LOST and job.max_attempt:
            reason = f"{reason} (attempt {job.attempt} of {job.max_attempt})"
        return End(job, Result(Outcome.FAILED, reason))

    def wake_at(self, now: float) -> float:
        """When there is work no socket event will bring: the end of a backoff (when a slot is
        free to use it; else an answer frees one), or the first give-up; ``inf`` when none."""
        if not self._queue:
            return math.inf
        deadline = self._deadline(self._queue[0])
        if self._paused_until > now and self.in_flight < self.limits.max_in_flight:
            return min(self._paused_until, deadline)
        return deadline

    def take_queued(self, which: Callable[[Job], bool]) -> list[Job]:
        """The queued jobs ``which`` picks, oldest first, out of the queue (to be kept elsewhere);
        the others keep their places."""
        taken = [job for job in self._queue if which(job)]
        if taken:
            self._queue = deque(job for job in self._queue if not which(job))
            self._queued_bytes -= sum(len(job.body) for job in taken)
        return taken

    def clear(self) -> list[Job]:
        """Forget every job (at the end of a drain); returns those still queued."""
        self.in_flight = 0
        return self.take_queued(lambda job: True)

    def _deadline(self, job: Job) -> float:
        # Out since the earlier of the two: a pool that went down and came back refusing was
        # never able to take a job in between.
        return max(job.received, self.out_since) + self.limits.retry_for

    def _take(self) -> Job:
        job = self._queue.popleft()
        self._queued_bytes -= len(job.body)
        return job

    def _requeue(self, job: Job) -> None:
        # At the head, where it came from; among the jobs that failed together (at most
        # max_in_flight of them) in the order they came, so that an outage does not reverse them.
        at = 0
        while at < len(self._queue) and self._queue[at].id < job.id and at < self.limits.max_in_flight:
            at += 1
        self._queue.insert(at, job)
        self._queued_bytes += len(job.body)
