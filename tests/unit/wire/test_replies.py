"""Redis replies, as hiredis builds them from RESP2 bytes, into typed values."""

from __future__ import annotations

from typing import Any

import hiredis

from asyncphp.wire import replies
from asyncphp.wire.replies import ReplyError, StreamEntry


def resp(*items: Any) -> bytes:
    """RESP2 for nested lists of bytes, ints and None."""
    out = b""
    for item in items:
        if item is None:
            out += b"*-1\r\n"
        elif isinstance(item, int):
            out += b":%d\r\n" % item
        elif isinstance(item, bytes):
            out += b"$%d\r\n%s\r\n" % (len(item), item)
        else:
            out += b"*%d\r\n" % len(item) + resp(*item)
    return out


def parsed(data: bytes) -> Any:
    reader = hiredis.Reader(replyError=ReplyError)
    reader.feed(data)
    return reader.gets()


def test_error_replies_carry_their_code() -> None:
    error = parsed(b"-NOGROUP No such key 'jobs' or consumer group 'asyncphp'\r\n")
    assert isinstance(error, ReplyError) and error.code == "NOGROUP"


def test_xreadgroup_entries_per_stream_and_a_timed_out_block() -> None:
    reply = parsed(
        resp([[b"jobs", [[b"1-0", [b"payload", b"{}"]], [b"2-0", [b"payload", b"[]", b"x", b"y"]]]]])
    )
    assert replies.xreadgroup(reply) == [
        (
            "jobs",
            [StreamEntry("1-0", {b"payload": b"{}"}), StreamEntry("2-0", {b"payload": b"[]", b"x": b"y"})],
        )
    ]
    assert replies.xreadgroup(parsed(b"*-1\r\n")) == []


def test_xautoclaim_on_redis_7_and_on_6_2() -> None:
    seven = parsed(resp([b"5-0", [[b"3-0", [b"payload", b"{}"]]], [b"4-0"]]))
    claim = replies.xautoclaim(seven)
    assert (claim.cursor, [e.id for e in claim.entries], claim.deleted) == ("5-0", ["3-0"], ["4-0"])
    # 6.2: no third element; an entry trimmed away comes back with nil fields.
    six = parsed(resp([b"0-0", [[b"3-0", [b"payload", b"{}"]], [b"4-0", None]]]))
    claim = replies.xautoclaim(six)
    assert (claim.cursor, [e.id for e in claim.entries], claim.deleted) == ("0-0", ["3-0"], ["4-0"])


def test_xpending_extended_rows_give_the_delivery_counts() -> None:
    reply = parsed(resp([[b"3-0", b"host1", 61000, 2], [b"7-1", b"host1", 60500, 5]]))
    assert replies.xpending_deliveries(reply) == {"3-0": 2, "7-1": 5}
    assert replies.xpending_deliveries(parsed(resp([]))) == {}


def test_xclaim_ids_with_and_without_justid() -> None:
    assert replies.xclaim_ids(parsed(resp([b"3-0", b"4-0"]))) == ["3-0", "4-0"]
    assert replies.xclaim_ids(parsed(resp([[b"3-0", [b"payload", b"{}"]], None]))) == ["3-0"]
    assert replies.xclaim_ids(parsed(resp([]))) == []


def test_xinfo_groups_with_and_without_lag() -> None:
    fields = [b"name", b"asyncphp", b"consumers", 2, b"pending", 3, b"last-delivered-id", b"9-0"]
    seven = parsed(resp([[*fields, b"entries-read", 9, b"lag", 4]]))
    assert replies.xinfo_groups(seven)["asyncphp"] == replies.GroupInfo(
        lag=4, pending=3, last_delivered="9-0"
    )
    trimmed = parsed(resp([[b"name", b"g", b"pending", 0, b"last-delivered-id", b"1-0", b"lag", None]]))
    assert replies.xinfo_groups(trimmed)["g"].lag == -1
    six = parsed(resp([[b"name", b"g", b"consumers", 0, b"pending", 0, b"last-delivered-id", b"0-0"]]))
    assert replies.xinfo_groups(six)["g"].lag == -1


def test_server_version_from_info() -> None:
    info = b"# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n"
    assert replies.server_version(info) == (7, 0, 15)
    assert replies.server_version(b"# Server\r\n") == ()


def test_the_pubsub_output_buffer_limit_from_config_get() -> None:
    default = parsed(
        resp(
            [
                b"client-output-buffer-limit",
                b"normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
            ]
        )
    )
    assert replies.pubsub_output_limit(default) == "32mb hard, 8mb for 60 s"
    small = parsed(resp([b"client-output-buffer-limit", b"normal 0 0 0 pubsub 262144 131072 5"]))
    assert replies.pubsub_output_limit(small) == "256kb hard, 128kb for 5 s"
    odd = parsed(resp([b"client-output-buffer-limit", b"pubsub 1000 0 0"]))
    assert replies.pubsub_output_limit(odd) == "1000 bytes hard, no limit for 0 s"
    off = parsed(resp([b"client-output-buffer-limit", b"pubsub 0 0 0"]))
    assert replies.pubsub_output_limit(off) == "no limit hard, no limit for 0 s"
    assert replies.pubsub_output_limit(parsed(resp([]))) == ""
