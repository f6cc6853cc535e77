"""How bytes from outside (messages, worker stderr) appear in a log line: short, escaped, one line."""

from __future__ import annotations

PREVIEW_CHARS = 200

_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"', ord("\\"): "\\\\"})
# Bytes that are not UTF-8 come back from surrogateescape as U+DC80..U+DCFF.
_ESCAPES.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})


def preview(data: bytes, limit: int = PREVIEW_CHARS) -> str:
    """``data`` quoted on one line: readable UTF-8, escaped control and invalid bytes, and at
    most ``limit`` characters before an ellipsis with the full size."""
    text = data[: limit + 4].decode("utf-8", "surrogateescape")
    if len(text) > limit:
        return f'"{text[:limit].translate(_ESCAPES)}"… ({len(data)} bytes)'
    return f'"{text.translate(_ESCAPES)}"'
