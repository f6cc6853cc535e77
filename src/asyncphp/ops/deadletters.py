"""Dead letters of a stream (``<stream>:dead``): list them, put them back, or purge them.

Every operation works in pages (``PAGE`` letters a command), so that a stream with a million dead
letters costs no more memory than one with a hundred; one letter's replay is one script
(`scripts.REPLAY`), so that concurrent or repeated replays run each job once. A dead letter is what
a worker or a publisher sent, bytes that need not be text: every field is shown with its bad bytes
replaced, never refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from asyncphp.redisurl import Client
from asyncphp.wire import replies
from asyncphp.wire.keys import Keys
from asyncphp.wire.scripts import REPLAY

PAGE = 100
REPLAY_UNIQUE_FOR_MS = 3_600_000  # a replayed unique job holds its key until processed, an hour at most


@dataclass(frozen=True)
class Replayed:
    letter_id: str
    new_id: str


@dataclass(frozen=True)
class Held:
    """Not replayed: another job of the letter's unique key holds its guard (the letter stays)."""

    letter_id: str
    guard: str
    holder: str


@dataclass(frozen=True)
class DeadLetter:
    id: str  # in the dead-letter stream
    fields: dict[str, bytes]

    @property
    def original_id(self) -> str:
        return self.text("id")

    @property
    def payload(self) -> bytes:
        return self.fields.get("payload", b"")

    def text(self, name: str, default: str = "") -> str:
        """A field as text, its bad bytes replaced."""
        value = self.fields.get(name)
        return default if value is None else value.decode(errors="replace")


def _letters(client: Client, stream: str, first: str = "-", last: str = "+") -> Iterator[DeadLetter]:
    """The dead letters from ``first`` to ``last``, oldest first, a page at a time."""
    start = first
    while True:
        rows: Any = client.xrange(Keys(stream).dead, start, last, count=PAGE)  # loose types
        for entry_id, fields in rows:
            yield DeadLetter(entry_id.decode(), {k.decode(errors="replace"): v for k, v in fields.items()})
        if len(rows) < PAGE:
            return
        start = "(" + rows[-1][0].decode()  # after the last one seen


def listing(client: Client, stream: str, count: int | None = None) -> Iterator[DeadLetter]:
    """The dead letters of ``stream``, oldest first (the first ``count``), read a page at a time."""
    for n, letter in enumerate(_letters(client, stream)):
        if count is not None and n >= count:
            return
        yield letter


def _newest(client: Client, stream: str) -> str | None:
    rows: Any = client.xrevrange(Keys(stream).dead, count=1)
    return rows[0][0].decode() if rows else None


def _chosen(client: Client, stream: str, ids: list[str] | None) -> Iterator[str]:
    """The ids of the letters named, or (None) of every letter there when the call began: one a
    daemon writes meanwhile is left for the next call."""
    if ids is not None:
        yield from ids
        return
    newest = _newest(client, stream)
    if newest is not None:
        yield from (letter.id for letter in _letters(client, stream, last=newest))


def replay(client: Client, stream: str, ids: list[str] | None) -> Iterator[Replayed | Held]:
    """Add the payload of each dead letter (all if ``ids`` is None) to ``stream`` again, taking it
    out of the dead letters in the same step; yields what became of each this call moved (not those
    gone meanwhile), as it goes. A unique job's letter is replayed holding its guard again, or not
    while another job of its key holds it."""
    script = client.register_script(REPLAY)
    for letter_id in _chosen(client, stream, ids):
        reply: Any = script(
            keys=[Keys(stream).dead, stream, Keys(stream).maxlen], args=[letter_id, REPLAY_UNIQUE_FOR_MS]
        )
        if isinstance(reply, list):
            guard, holder = replies.texts(reply)
            yield Held(letter_id, guard, holder)
        elif reply:
            yield Replayed(letter_id, reply.decode() if isinstance(reply, bytes) else str(reply))


def purge(client: Client, stream: str, ids: list[str] | None) -> int:
    """Delete the given dead letters (all there when the call began, if ``ids`` is None); returns
    how many went."""
    deleted = 0
    page: list[str] = []

    def flush() -> int:
        removed: Any = client.xdel(Keys(stream).dead, *page) if page else 0
        page.clear()
        return int(removed)

    for letter_id in _chosen(client, stream, ids):
        page.append(letter_id)
        if len(page) == PAGE:
            deleted += flush()
    return deleted + flush()
