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
# W3C Trace Context, version 00: 32 hex trace id and 16 hex parent id, neither all zeros.
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
TRACESTATE = re.compile(r"[\x20-\x7e]{0,512}")  # printable ASCII, W3C's length limit


@dataclass(frozen=True, slots=True)
class Meta:
    release: str = ""
    traceparent: str = ""
    tracestate: str = ""


NONE = Meta()


class BadRelease(ValueError):
    """The release id could name something other than a release directory."""


def take(data: dict[str, Any]) -> tuple[Meta, list[str]]:
    """The meta of a decoded message, removed from it; and what was dropped from it, and why
    (malformed trace context is never forwarded).

    Raises:
        BadRelease: a release id outside the allowed characters (the job must not run).
    """
    raw = data.pop(KEY, None)
    if raw is None:
        return NONE, []
    if not isinstance(raw, dict):
        return NONE, [f"{KEY} is not an object: ignored"]
    dropped = []
    release = raw.get("release", "")
    if not isinstance(release, str) or (release and not RELEASE.fullmatch(release)):
        raise BadRelease(
            f"release {release!r} is not a release id (letters, digits, '.', '_', '-'; 64 at most)"
        )
    traceparent, tracestate = raw.get("traceparent", ""), raw.get("tracestate", "")
    if traceparent and not (isinstance(traceparent, str) and TRACEPARENT.fullmatch(traceparent)):
        dropped.append(f"traceparent {str(traceparent)[:80]!r} is malformed: dropped")
        traceparent, tracestate = "", ""
    if tracestate and not (isinstance(tracestate, str) and TRACESTATE.fullmatch(tracestate)):
        dropped.append(f"tracestate {str(tracestate)[:80]!r} is malformed: dropped")
        tracestate = ""
    if not traceparent:
        tracestate = ""  # meaningless without its parent
    return Meta(release, traceparent, tracestate), dropped
