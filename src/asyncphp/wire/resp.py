"""Commands as Redis reads them (RESP arrays of bulk strings), built in one pass.

redis-py's ``pack_command`` does the same with more generality (floats, memoryviews, big
payloads split into chunks) than the daemon's own commands need, at several times the cost;
in the durable mode a command goes out every few jobs.
"""

from __future__ import annotations

Arg = str | bytes | int


def command(*args: Arg) -> bytes:
    """``args`` as one RESP array: strings UTF-8 encoded, integers in decimal."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            raise TypeError(f"a Redis command argument must be str, bytes or int, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
