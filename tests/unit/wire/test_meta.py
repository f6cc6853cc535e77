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
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a version this does not know
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
    assert take(data) == (Meta(), ["_asyncphp is not an object: ignored"]) and data == {"n": 1}
