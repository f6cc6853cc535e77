"""RESP commands byte for byte as redis-py packs them."""

from __future__ import annotations

import pytest
from redis.connection import Connection

from asyncphp.wire.resp import command

CASES: list[tuple[str | bytes | int, ...]] = [
    ("PING",),
    ("XACK", "jobs", "asyncphp", "1-0", "2-0"),
    ("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "BLOCK", 2000, "STREAMS", "jobs", ">"),
    ("EVAL", "return 1", 0, b"\x00\xff binary \r\n", "ünïcode", -5, 0),
    ("SET", "", b""),
]


@pytest.mark.parametrize("args", CASES)
def test_commands_are_packed_as_redis_py_packs_them(args: tuple[str | bytes | int, ...]) -> None:
    assert command(*args) == b"".join(Connection().pack_command(*args))


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError):  # said by the function, or by mypyc's check of the annotation
        command("INCRBYFLOAT", "k", 1.5)  # type: ignore[arg-type]
