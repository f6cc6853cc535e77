"""Dead letters of a stream (``<stream>:dead``): list them, put them back, or purge them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncphp.caller import DEFAULT_MAXLEN
from asyncphp.loop.streams import DEAD_SUFFIX
from asyncphp.redisurl import Client


@dataclass(frozen=True)
class DeadLetter:
    id: str  # in the dead-letter stream
    fields: dict[str, bytes]

    @property
    def original_id(self) -> str:
        return self.fields.get("id", b"").decode()

    @property
    def payload(self) -> bytes:
        return self.fields.get("payload", b"")


def listing(client: Client, stream: str, count: int | None = None) -> list[DeadLetter]:
    """The dead letters of ``stream``, oldest first."""
    rows: Any = client.xrange(stream + DEAD_SUFFIX, count=count)  # redis-py's types are loose here
    return [
        DeadLetter(entry_id.decode(), {k.decode(): v for k, v in fields.items()}) for entry_id, fields in rows
    ]


def replay(client: Client, stream: str, ids: list[str] | None) -> list[tuple[str, str]]:
    """Add the payload of each dead letter (all if ``ids`` is None) to ``stream`` again and remove
    it from the dead letters; returns (dead letter id, new entry id) pairs."""
    done = []
    for letter in listing(client, stream):
        if ids is not None and letter.id not in ids:
            continue
        new_id: Any = client.xadd(
            stream, {"payload": letter.payload}, maxlen=DEFAULT_MAXLEN, approximate=True
        )
        client.xdel(stream + DEAD_SUFFIX, letter.id)
        done.append((letter.id, new_id.decode() if isinstance(new_id, bytes) else str(new_id)))
    return done


def purge(client: Client, stream: str, ids: list[str] | None) -> int:
    """Delete the given dead letters (all if ``ids`` is None); returns how many went."""
    if ids is None:
        count: Any = client.xlen(stream + DEAD_SUFFIX)
        client.delete(stream + DEAD_SUFFIX)
        return int(count)
    deleted: Any = client.xdel(stream + DEAD_SUFFIX, *ids) if ids else 0
    return int(deleted)
