"""What a publisher says besides the payload: taken out of it, checked (pure)."""

from __future__ import annotations

import pytest

from asyncphp.wire.body import BadMessage, message_body
from asyncphp.wire.meta import BadRelease, Meta, take

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_meta_is_taken_out_of_the_payload() -> None:
    data = {"user": 42, "_asyncphp": {"release": "2026.11.29-3", "traceparent": TRACE, "tracestate": "v=1"}}
    assert take(data) == (Meta("2026.11.29-3", TRACE, "v=1"), [])
    assert data == {"user": 42}
    body, meta, dropped = message_body(b'{"user":42,"_asyncphp":{"release":"r1"}}')
    assert (body, meta, dropped) == (b"user=42", Meta("r1"), []), "the worker's $_POST has none of it"


@pytest.mark.parametrize("release", ["../x", "a/b", ".hidden", "-x", "", "x" * 65, 7])
def test_a_release_id_that_could_name_another_directory_is_refused(release: object) -> None:
    if release == "":
        assert take({"_asyncphp": {"release": ""}}) == (Meta(), [])
        return
    with pytest.raises(BadRelease):
        take({"_asyncphp": {"release": release}})
    with pytest.raises(BadMessage, match="is not a release id"):
        message_body(f'{{"_asyncphp": {{"release": {release!r}}}}}'.replace("'", '"').encode())


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # the invalid version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",  # version 00 carries no more
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01more",  # more, without its dash
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        42,
    ],
)
def test_malformed_trace_context_is_dropped_never_forwarded(traceparent: object) -> None:
    meta, dropped = take({"_asyncphp": {"traceparent": traceparent, "tracestate": "v=1", "release": "r1"}})
    assert meta == Meta("r1") and len(dropped) == 1 and "malformed: dropped" in dropped[0]


def test_meta_that_is_not_an_object_is_ignored_with_a_word() -> None:
    data = {"_asyncphp": "r1", "n": 1}
    assert take(data) == (Meta(), ["_asyncphp is not an object but str 'r1': ignored"]) and data == {"n": 1}


@pytest.mark.parametrize(
    "traceparent",
    [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-later",
    ],
)
def test_a_later_version_of_trace_context_is_taken(traceparent: str) -> None:
    # W3C asks a parser of version 00 to accept later versions and read past what they add.
    assert take({"_asyncphp": {"traceparent": traceparent}}) == (Meta(traceparent=traceparent), [])


# Trace metadata as a careless or hostile publisher may send it: each must be one job's problem (issue
# 23, item 9: with tracing on, a false tracestate raised in the daemon's Redis handler and lost the
# messages read with it). Shared with tests/integration/test_traces.py, which runs them for real.
BAD_META: list[object] = [
    *(
        {"traceparent": TRACE, "tracestate": value}
        for value in (
            False,
            0,
            0.0,
            [],
            {},
            True,
            1,
            ["v=1"],
            {"v": 1},
            "x" * 600,
            "x" * 100_000,
            "vé=1",
            "v=\x00",
            "v=1\r\nX-Injected: 1",
            "v=\u2028",
        )
    ),
    *(
        {"traceparent": value}
        for value in (
            False,
            0,
            [],
            {},
            True,
            42,
            4.2,
            ["00"],
            "00-garbage",
            "0" * 55,
            TRACE.upper(),
            TRACE + "\n",
            TRACE + "\x00",
            "\u0660" * 55,
            "x" * 100_000,
        )
    ),
    [],
    [TRACE],
    0,
    1,
    "text",
    None,
    True,
]


@pytest.mark.parametrize("bad", BAD_META, ids=lambda bad: repr(bad)[:40])
def test_bad_trace_metadata_is_dropped_with_a_reason_and_the_job_keeps_its_release(bad: object) -> None:
    raw = {**bad, "release": "r1"} if isinstance(bad, dict) else bad
    data = {"n": 1, "_asyncphp": raw}
    meta, dropped = take(data)
    assert data == {"n": 1}
    assert isinstance(meta.traceparent, str) and isinstance(meta.tracestate, str)
    assert meta.traceparent in ("", TRACE) and meta.tracestate == ""
    assert meta.release == ("r1" if isinstance(bad, dict) else "")
    assert (bad is None) == (dropped == []), dropped
    assert all(len(reason) < 200 for reason in dropped), "a short preview, never the whole value"
