"""Delayed jobs of a stream (``<stream>:delayed``): list them, cancel them, or run them now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncphp.redisurl import Client
from asyncphp.wire import scripts
from asyncphp.wire.keys import Keys


@dataclass(frozen=True)
class Delayed:
    id: str  # d<n>
    due: datetime
    payload: bytes
    unique: str  # the guard's key and lifetime, "" if none


def waiting(client: Client, stream: str) -> tuple[int, datetime | None]:
    """How many delayed jobs wait, and when the first is due."""
    keys = Keys(stream)
    count: Any = client.zcard(keys.delayed)
    first: Any = client.zrange(keys.delayed, 0, 0, withscores=True)
    return int(count), (_time(first[0][1]) if first else None)


def listing(client: Client, stream: str, count: int | None = None) -> list[Delayed]:
    """The delayed jobs of ``stream``, the first due first."""
    keys = Keys(stream)
    rows: Any = client.zrange(keys.delayed, 0, -1 if count is None else count - 1, withscores=True)
    if not rows:
        return []
    ids = [member.decode() for member, _ in rows]
    payloads: Any = client.hmget(keys.jobs, ids)
    uniques: Any = client.hmget(keys.unique_of, ids)
    return [
        Delayed(job_id, _time(score), payload or b"", (unique or b"").decode().replace("\n", " until "))
        for job_id, (_, score), payload, unique in zip(ids, rows, payloads, uniques, strict=True)
    ]


def cancel(client: Client, stream: str, ids: list[str]) -> list[str]:
    """Remove the given delayed jobs (and the guard a unique one holds); returns those removed."""
    reply: Any = client.register_script(scripts.CANCEL)(keys=list(Keys(stream).moving()), args=ids)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]


def run_now(client: Client, stream: str, ids: list[str]) -> list[tuple[str, str]]:
    """Move the given delayed jobs into the stream now; returns (delayed id, entry id) pairs."""
    reply = client.register_script(scripts.MOVE)(
        keys=list(Keys(stream).moving()), args=[scripts.MOVE_BATCH, *ids]
    )
    return scripts.moved(reply).ids


def _time(score: float) -> datetime:
    return datetime.fromtimestamp(float(score) / 1000, UTC)
