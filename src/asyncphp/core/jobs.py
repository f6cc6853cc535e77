"""The vocabulary shared by sources, the daemon and the dispatcher: a message, a job, and how a
job ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """What a source received. ``origin`` is the source's handle for settling it (a stream entry);
    None for pub/sub, which has nothing to acknowledge."""

    channel: str
    payload: bytes
    origin: Any = None
    message_id: str = ""  # a stream entry's id
    deliveries: int = 1  # how often Redis has delivered it, this time included


@dataclass(slots=True)
class Job:
    id: int
    channel: str
    body: bytes
    received: float  # time.monotonic()
    attempts: int = 0  # requests sent to the pool for it, counting earlier deliveries of a stream entry
    last_error: str = ""  # why the pool could not take it last time
    origin: Any = None
    message_id: str = ""  # the stream entry id, for the worker


class Outcome(enum.Enum):
    COMPLETED = "completed"  # the worker answered 2xx or 3xx
    REJECTED = "rejected"  # the worker answered 4xx, or the message could not become a request
    FAILED = "failed"  # the worker ran and failed, or may have: 5xx, fatal error, lost mid-answer
    UNDELIVERED = "undelivered"  # the pool could not take it for retry_for seconds
    DROPPED = "dropped"  # the queue was full
    ABANDONED = "abandoned"  # still queued or running when the daemon stopped


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str = ""
    status: int | None = None
    stderr: bytes = b""
    seconds: float | None = None  # from dispatch to the pool's complete answer
