"""Redis replies → typed values, in one place, so callers never index ``reply[0]`` (pure).

Replies arrive as hiredis builds them in RESP2: bytes, int, lists, None, and error replies as
:class:`ReplyError` (the connection gives hiredis this class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ReplyError(Exception):
    """An error reply from Redis, e.g. ``NOGROUP No such key 'jobs' or consumer group …``."""

    @property
    def code(self) -> str:
        """The error's first word: NOGROUP, BUSYGROUP, WRONGTYPE, NOSCRIPT, NOPERM…"""
        return str(self).split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class StreamEntry:
    id: str
    fields: dict[bytes, bytes]
    deleted: bool = False  # XAUTOCLAIM on Redis 6.2 names pending entries trimmed away this way


@dataclass(frozen=True, slots=True)
class AutoClaim:
    cursor: str  # where the scan goes on; "0-0" once it has wrapped
    entries: list[StreamEntry]
    deleted: list[str]  # pending entries no longer in the stream (Redis 7)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    lag: int  # -1 when Redis cannot tell (before 7.0, or after a trim)
    pending: int
    last_delivered: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def text(reply: Any) -> str:
    """A bulk string reply as text."""
    return _text(reply)


def _entry(row: Any) -> StreamEntry:
    entry_id, flat = row[0], row[1]
    if flat is None:
        return StreamEntry(_text(entry_id), {}, deleted=True)
    return StreamEntry(_text(entry_id), dict(zip(flat[::2], flat[1::2], strict=True)))


def xreadgroup(reply: Any) -> list[tuple[str, list[StreamEntry]]]:
    """``XREADGROUP … STREAMS s1 s2 > >``: the entries per stream (None, when BLOCK ran out: [])."""
    return [(_text(stream), [_entry(row) for row in rows]) for stream, rows in reply or []]


def xautoclaim(reply: Any) -> AutoClaim:
    """``XAUTOCLAIM``: the cursor, the entries claimed, and (Redis 7) the ids found deleted."""
    cursor, rows = _text(reply[0]), reply[1]
    deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
    entries = [_entry(row) for row in rows]
    deleted += [e.id for e in entries if e.deleted]
    return AutoClaim(cursor, [e for e in entries if not e.deleted], deleted)


def xpending_deliveries(reply: Any) -> dict[str, int]:
    """The extended ``XPENDING key group start end count [consumer]``: entry id → deliveries."""
    return {_text(row[0]): int(row[3]) for row in reply or []}


def xclaim_ids(reply: Any) -> list[str]:
    """``XCLAIM`` (with or without JUSTID): the ids it claimed; entries gone from the stream are
    left out (Redis 6.2 answers them as nil)."""
    return [_text(row if isinstance(row, bytes) else row[0]) for row in reply or [] if row is not None]


def texts(reply: Any) -> list[str]:
    """A list of bulk strings (names, ids) as text, bad bytes replaced: for a log line."""
    return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in reply or []]


def xinfo_groups(reply: Any) -> dict[str, GroupInfo]:
    """``XINFO GROUPS key``: group name → what ``status`` shows."""
    groups = {}
    for flat in reply or []:
        info = dict(zip(flat[::2], flat[1::2], strict=True))
        lag = info.get(b"lag")
        groups[_text(info[b"name"])] = GroupInfo(
            lag=lag if isinstance(lag, int) else -1,
            pending=int(info.get(b"pending", 0)),
            last_delivered=_text(info.get(b"last-delivered-id", b"")),
        )
    return groups


def server_version(info: bytes) -> tuple[int, ...]:
    """The version in an ``INFO server`` reply, as numbers (``()`` if absent)."""
    for line in info.splitlines():
        if line.startswith(b"redis_version:"):
            return tuple(int(n) for n in line.split(b":", 1)[1].split(b".") if n.isdigit())
    return ()


def pubsub_output_limit(reply: Any) -> str:
    """From ``CONFIG GET client-output-buffer-limit``: the pub/sub class, e.g. ``32mb hard, 8mb
    for 60 s``; "" if the reply has none."""
    words = _text(reply[1]).split() if reply and len(reply) > 1 else []
    for at in range(0, len(words) - 3, 4):
        if words[at] == "pubsub":
            hard, soft, seconds = (int(w) for w in words[at + 1 : at + 4])
            return f"{_size(hard)} hard, {_size(soft)} for {seconds} s"
    return ""


def _size(count: int) -> str:
    if count == 0:
        return "no limit"
    if count % (1 << 20) == 0:
        return f"{count >> 20}mb"
    if count % (1 << 10) == 0:
        return f"{count >> 10}kb"
    return f"{count} bytes"


@dataclass(frozen=True, slots=True)
class SlotRange:
    """Slots ``first`` … ``last`` and the primary that serves them ("" for a host: the node asked)."""

    first: int
    last: int
    host: str
    port: int


def cluster_slots(reply: Any) -> list[SlotRange]:
    """From ``CLUSTER SLOTS`` (RESP2): each range of slots and its primary."""
    return [
        SlotRange(int(row[0]), int(row[1]), _text(row[2][0]) if row[2][0] is not None else "", int(row[2][1]))
        for row in reply
    ]
