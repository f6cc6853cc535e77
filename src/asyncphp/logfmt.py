"""How bytes from outside (messages, worker stderr) appear in a log line: short, escaped, one line."""

from __future__ import annotations

PREVIEW_CHARS = 200


def preview(data: bytes, limit: int = PREVIEW_CHARS) -> str:
    """``data`` as a quoted, escaped single line of at most ``limit`` characters plus an ellipsis."""
    text = data[: limit * 4].decode("utf-8", "backslashreplace")
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    if len(escaped) > limit or len(data) > limit * 4:
        return f'"{escaped[:limit]}"… ({len(data)} bytes)'
    return f'"{escaped}"'
