"""The vocabulary shared by sources, the daemon and the dispatcher: a message, a job, how a job's
attempt failed, and how a job ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from asyncphp.wire.meta import NONE, Meta


class Origin(Protocol):
    """Where a message came from, told once how it ended: a stream entry is then acknowledged,
    dead-lettered or tried again; a pub/sub message has nobody to tell."""

    def ended(self, job: Job, result: Result) -> None:
        """The job made of the message ended."""

    def rejected(self, message: Message, reason: str) -> None:
        """The message could not become a job."""


class _Nowhere:
    def ended(self, job: Job, result: Result) -> None:
        pass

    def rejected(self, message: Message, reason: str) -> None:
        pass


NOWHERE: Origin = _Nowhere()


@dataclass(frozen=True, slots=True)
class Message:
    """What a source received, before it became a job."""

    channel: str
    payload: bytes
    origin: Origin = NOWHERE
    message_id: str = ""  # a stream entry's id, for the worker
    attempt: int = 1  # a stream entry's delivery, as Redis counts them
    # A request lost before any answer is retried by the dispatcher itself (pub/sub: nothing else
    # keeps the message); a stream entry's is not: its ledger retries it, counted by Redis.
    retry_here: bool = True
    due_at: str = ""  # a delayed job's due time (seconds since the epoch), for the worker
    first_id: str = ""  # the entry its lineage began with, when it was run again through the delayed set


@dataclass(slots=True)
class Job:
    id: int
    channel: str
    body: bytes
    received: float  # monotonic; when it was accepted
    attempt: int = 1  # ASYNCPHP_ATTEMPT of the next request: rises only when a request may have run
    max_attempt: int = 1  # past this, a request lost before any answer ends the job; 0: never retried here
    origin: Origin = NOWHERE
    message_id: str = ""
    payload: bytes = b""  # the message as received, for a spill file (pub/sub) or a log line
    due_at: str = ""  # a delayed job's due time, as ASYNCPHP_DUE_AT
    first_id: str = ""  # as ASYNCPHP_FIRST_ID: the entry its lineage began with, if not this one
    meta: Meta = NONE  # what the publisher said besides the payload: its release, its trace
    script: str = ""  # its release's worker script; "" for worker_script itself
    last_error: str = ""  # why the pool could not take it last time
    counted: bool = False  # counted as dispatched (once per delivery, whatever the retries)

    @property
    def release(self) -> str:
        """The release that published it (or default_release), as ASYNCPHP_RELEASE."""
        return self.meta.release

    @property
    def published(self) -> bool:
        """A pub/sub job: nothing but this daemon keeps its message (a stream entry stays in Redis)."""
        return self.origin is NOWHERE


class Failure(enum.Enum):
    """How a request failed without a complete answer; what it means for the job."""

    UNREACHABLE = "unreachable"  # no connection: it never ran
    REFUSED = "refused"  # the pool accepted the connection and refused the request: it never ran
    LOST = "lost"  # the request reached the pool; the connection died before any answer: it may have run
    BROKEN = "broken"  # it ran (an answer began) or may have, and its outcome will not be known


class Outcome(enum.Enum):
    COMPLETED = "completed"  # the worker answered 2xx or 3xx
    REJECTED = "rejected"  # the worker answered 4xx, or the message could not become a request
    FAILED = "failed"  # the worker ran and failed, or may have: 5xx, fatal error, lost mid-answer
    DEFERRED = "deferred"  # the worker asked to be run again later (Asyncphp-Retry-In)
    UNDELIVERED = "undelivered"  # the pool could not be reached for retry_for seconds
    DROPPED = "dropped"  # no room for it, in the queue or the spill file
    ABANDONED = "abandoned"  # still queued or running when the daemon stopped


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str = ""
    status: int = 0  # the worker's HTTP status; 0 when it did not answer
    stderr: bytes = b""
    seconds: float = -1.0  # from dispatch to the pool's complete answer; -1 when there was none
    again: float = 0.0  # DEFERRED: run again this many seconds from now
    uncounted: bool = False  # DEFERRED without running it (a framework in maintenance): no attempt spent
    # FAILED for good, and the worker has kept it itself (a framework's failed-jobs table): it is
    # acknowledged, not retried nor dead-lettered, so that each failure is kept in one place.
    recorded: bool = False


@dataclass
class Counters:
    """What this daemon did, for the summary line, STATUS= and the heartbeat."""

    received: int = 0  # messages from Redis (a spilled one is counted when it first arrived)
    rejected: int = 0  # messages that could not become a job
    dispatched: int = 0  # deliveries written whole to the pool (a retry of the same delivery is not one)
    completed: int = 0
    failed: int = 0  # the worker ran and failed (4xx included), or may have
    retried: int = 0  # attempts tried again by the dispatcher
    deferred: int = 0  # jobs the worker asked to run again later
    given_up: int = 0  # jobs the pool could not take for retry_for seconds
    dropped: int = 0  # messages with no room in the queue nor the spill file
    spilled: int = 0  # messages written to the spill file
    abandoned: int = 0  # jobs still queued or running at the end of a drain
    dead_lettered: int = 0  # stream entries Redis confirmed as dead letters
    traces_dropped: int = 0  # malformed trace context, not forwarded

    @property
    def not_ok(self) -> int:
        """Every job that did not end well."""
        return self.failed + self.given_up + self.dropped

    def ended(self, outcome: Outcome) -> None:
        if outcome is Outcome.COMPLETED:
            self.completed += 1
        elif outcome in (Outcome.FAILED, Outcome.REJECTED):
            self.failed += 1
        elif outcome is Outcome.DEFERRED:
            self.deferred += 1
        elif outcome is Outcome.UNDELIVERED:
            self.given_up += 1
        elif outcome is Outcome.DROPPED:
            self.dropped += 1
        else:
            self.abandoned += 1
