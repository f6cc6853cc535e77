"""What a publisher says about a job besides its payload: the release that published it and the
trace it continues (pure).

It travels inside the JSON object, under one reserved key, so that it needs no change to how a
message is published (pub/sub, a stream, a delayed job) and is kept wherever the payload is:

    {"user": 42, "_asyncphp": {"release": "2026-11-29.3", "traceparent": "00-…-…-01", "tracestate": "…"}}

The daemon takes the key out before the worker's ``$_POST`` is built, and hands its values to
the worker as ``ASYNCPHP_RELEASE``, ``HTTP_TRACEPARENT`` and ``HTTP_TRACESTATE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KEY = "_asyncphp"
# A release id names a directory: no "/", no "..", no leading dot or dash, and short.
RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# W3C Trace Context: a version (ff is invalid), a 32 hex trace id and a 16 hex parent id (neither
# all zeros) and the flags. A version after 00 may carry more after another dash, which W3C asks a
# parser of version 00 to accept and read past; version 00 carries nothing more.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def valid_traceparent(value: str) -> bool:
    found = _TRACEPARENT.match(value)
    if found is None or found[1] == "ff" or len(value) > 512:
        return False
    rest = value[found.end() :]
    if found[1] == "00":
        return rest == ""
    return rest == "" or (rest[0] == "-" and _PRINTABLE.fullmatch(rest) is not None)


TRACESTATE = re.compile(r"[\x20-\x7e]{0,512}")  # printable ASCII, W3C's length limit


def _valid_tracestate(value: str) -> bool:
    return TRACESTATE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Meta:
    """Carried whole from the message to the request: a field added here reaches the worker
    through :meth:`params`, with no other record to widen."""

    release: str = ""
    traceparent: str = ""
    tracestate: str = ""

    def params(self) -> list[tuple[bytes, bytes]]:
        """What the worker gets in ``$_SERVER``, for the fields set."""
        params = [(b"ASYNCPHP_RELEASE", self.release.encode())] if self.release else []
        if self.traceparent:
            params.append((b"HTTP_TRACEPARENT", self.traceparent.encode()))
            if self.tracestate:
                params.append((b"HTTP_TRACESTATE", self.tracestate.encode()))
        return params

    def traced(self, traceparent: str, tracestate: str) -> Meta:
        """The same, continuing another trace context (the daemon's own span, with traces on)."""
        return Meta(self.release, traceparent, tracestate if traceparent else "")

    def released(self, release: str) -> Meta:
        return Meta(release, self.traceparent, self.tracestate)


NONE = Meta()


class BadRelease(ValueError):
    """The release id could name something other than a release directory."""


def _preview(value: Any) -> str:
    return repr(value)[:80]


def take(data: dict[str, Any]) -> tuple[Meta, list[str]]:
    """The meta of a decoded message, removed from it; and what was dropped from it, and why.

    Bad trace context is one job's problem: whatever its type or bytes, it is dropped with a reason
    and the job runs without it; only text that passes W3C's rules is forwarded.

    Raises:
        BadRelease: a release that is not a release id (the job must not run: which code would?).
    """
    raw = data.pop(KEY, None)
    if raw is None:
        return NONE, []
    if not isinstance(raw, dict):
        return NONE, [f"{KEY} is not an object but {type(raw).__name__} {_preview(raw)}: ignored"]
    release = raw.get("release")
    if release is None:
        release = ""
    if not isinstance(release, str) or (release and not RELEASE.fullmatch(release)):
        raise BadRelease(
            f"release {_preview(release)} is not a release id (letters, digits, '.', '_', '-'; 64 at most)"
        )
    dropped = []
    found = {}
    for name, valid in (("traceparent", valid_traceparent), ("tracestate", _valid_tracestate)):
        value = raw.get(name)
        if value is None or value == "":
            found[name] = ""
        elif not isinstance(value, str) or not valid(value):
            dropped.append(f"{name} {_preview(value)} is malformed: dropped")
            found[name] = ""
        else:
            found[name] = value
    traceparent, tracestate = found["traceparent"], found["tracestate"]
    if not traceparent:
        tracestate = ""  # meaningless without its parent
    return Meta(release, traceparent, tracestate), dropped
