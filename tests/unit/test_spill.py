from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncphp.loop.overflow import (
    HEADER_SIZE,
    RECORD_OVERHEAD,
    DropReport,
    Spill,
    SpilledMessage,
    SpillError,
)

ODD_PAYLOADS = [b"", b"{}", b"line one\nline two\r\n", bytes(range(256)), b"\x00" * 70_000, "é ✓".encode()]


def size_of(channel: str, payload: bytes) -> int:
    return RECORD_OVERHEAD + len(channel.encode()) + len(payload)


def test_round_trip_keeps_bytes_channel_and_time(tmp_path: Path) -> None:
    with Spill.open(tmp_path / "state", max_bytes=1 << 20) as spill:
        for i, payload in enumerate(ODD_PAYLOADS):
            spill.append("commands" if i % 2 else "événements", payload, 1_700_000_000.25 + i)
        assert spill.pending == len(ODD_PAYLOADS)
        assert spill.pending_bytes == sum(
            size_of("commands" if i % 2 else "événements", p) for i, p in enumerate(ODD_PAYLOADS)
        )
        taken = spill.take(100)
    assert taken == [
        SpilledMessage("commands" if i % 2 else "événements", p, 1_700_000_000.25 + i)
        for i, p in enumerate(ODD_PAYLOADS)
    ]


def test_take_respects_the_limit_and_order(tmp_path: Path) -> None:
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        for i in range(10):
            spill.append("c", b"%d" % i, float(i))
        assert [m.payload for m in spill.take(3)] == [b"0", b"1", b"2"]
        assert [m.payload for m in spill.take(0)] == []
        assert spill.pending == 7
        assert [m.payload for m in spill.take(100)] == [b"%d" % i for i in range(3, 10)]
        assert spill.take(5) == []


def test_order_across_reopen_and_nothing_replayed_twice(tmp_path: Path) -> None:
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        for i in range(5):
            spill.append("c", b"first run %d" % i, float(i))
        assert [m.payload for m in spill.take(2)] == [b"first run 0", b"first run 1"]
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        assert spill.pending == 3
        spill.append("c", b"second run", 9.0)
        assert [m.payload for m in spill.take(1)] == [b"first run 2"]
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        assert spill.discarded_bytes == 0
        assert [m.payload for m in spill.take(10)] == [b"first run 3", b"first run 4", b"second run"]
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        assert spill.pending == 0
        assert spill.take(10) == []


def test_close_writes_what_was_buffered_and_is_safe_twice(tmp_path: Path) -> None:
    spill = Spill.open(tmp_path, max_bytes=1 << 20)
    spill.append("c", b"kept", 1.0)
    assert os.path.getsize(tmp_path / "spill") == HEADER_SIZE, "append() must not write"
    spill.close()
    spill.close()
    with pytest.raises(SpillError, match="after close"):
        spill.append("c", b"late", 2.0)
    with Spill.open(tmp_path, max_bytes=1 << 20) as again:
        assert again.take(1) == [SpilledMessage("c", b"kept", 1.0)]


def test_pending_bytes_counts_records_not_yet_taken(tmp_path: Path) -> None:
    # The bound is the caller's (Overflow, one for all files: tests/unit/test_overflow.py); the file
    # says what it holds, across a restart too.
    one = size_of("c", b"x" * 10)
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        for _ in range(3):
            spill.append("c", b"x" * 10, 0.0)
        assert (spill.pending, spill.pending_bytes) == (3, 3 * one)
        spill.take(1)
        assert (spill.pending, spill.pending_bytes) == (2, 2 * one)
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        assert (spill.pending, spill.pending_bytes) == (2, 2 * one)


def test_file_is_cut_back_to_its_header_once_everything_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "spill"
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        for _ in range(100):
            spill.append("c", b"y" * 100, 0.0)
        spill.flush()
        assert path.stat().st_size == HEADER_SIZE + 100 * size_of("c", b"y" * 100)
        spill.take(99)
        assert path.stat().st_size > HEADER_SIZE
        spill.take(1)
        assert path.stat().st_size == HEADER_SIZE
        spill.append("c", b"after", 1.0)
        assert spill.take(5) == [SpilledMessage("c", b"after", 1.0)]
    assert path.stat().st_size == HEADER_SIZE


def test_a_file_that_never_empties_is_compacted(tmp_path: Path) -> None:
    path = tmp_path / "spill"
    one = size_of("c", b"z" * 50)
    with Spill.open(tmp_path, max_bytes=10 * one) as spill:
        for i in range(1000):
            spill.append("c", b"%050d" % i, float(i))
            if i >= 5:
                [message] = spill.take(1)
                assert message.payload == b"%050d" % (i - 5)
            assert path.stat().st_size <= HEADER_SIZE + 2 * 10 * one + one
    with Spill.open(tmp_path, max_bytes=10 * one) as spill:
        assert [m.received for m in spill.take(100)] == [float(i) for i in range(995, 1000)]


def test_open_finishes_a_compaction_that_stopped_before_the_cut(tmp_path: Path) -> None:
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        for i in range(4):
            spill.append("c", b"%d" % i, 0.0)
    path = tmp_path / "spill"
    data = path.read_bytes()
    one = size_of("c", b"0")
    # As _compact() leaves it just before the cut: records 2 and 3 copied to the front and the
    # header marking where the copy ends, the old records still behind it.
    body = data[HEADER_SIZE:]
    copy = body[2 * one :] + body[2 * one :]
    header = struct.pack("<8sIIQQ", b"APSPILL\0", 1, 0, HEADER_SIZE, HEADER_SIZE + 2 * one)
    path.write_bytes(header + copy)
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        assert [m.payload for m in spill.take(10)] == [b"2", b"3"]


def test_a_torn_last_record_is_cut_off_and_reported(tmp_path: Path) -> None:
    with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
        spill.append("c", b"whole", 1.0)
        spill.append("c", b"torn payload", 2.0)
    path = tmp_path / "spill"
    whole = HEADER_SIZE + size_of("c", b"whole")
    for cut in (whole + 3, whole + RECORD_OVERHEAD + 2, path.stat().st_size - 1):
        data = path.read_bytes()[:cut]
        path.write_bytes(data)
        with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
            assert spill.discarded_bytes == cut - whole
            assert spill.pending == 1
            spill.append("c", b"next", 3.0)
        with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
            assert spill.discarded_bytes == 0
            assert [m.payload for m in spill.take(10)] == [b"whole", b"next"]
        # Rebuild the file for the next cut.
        path.unlink()
        with Spill.open(tmp_path, max_bytes=1 << 20) as spill:
            spill.append("c", b"whole", 1.0)
            spill.append("c", b"torn payload", 2.0)


def test_records_larger_than_a_read_and_spanning_reads(tmp_path: Path) -> None:
    payloads = [b"%0100d" % i for i in range(3000)] + [b"B" * 600_000] + [b"after"]
    with Spill.open(tmp_path, max_bytes=1 << 22) as spill:
        for p in payloads:
            spill.append("c", p, 0.0)
        assert [m.payload for m in spill.take(2)] == payloads[:2]
    with Spill.open(tmp_path, max_bytes=1 << 22) as spill:
        assert spill.pending == len(payloads) - 2
        assert [m.payload for m in spill.take(10_000)] == payloads[2:]


def test_one_take_of_many_records_over_many_reads(tmp_path: Path) -> None:
    # Found by benchmarks/spill.py: take(n) stopped with "shorter than this process wrote it" once
    # half of n came from earlier reads (each read was given what was left of n as its own goal).
    payloads = [b"%010000d" % i for i in range(200)]  # 26 records a read
    with Spill.open(tmp_path, max_bytes=1 << 22) as spill:
        for p in payloads:
            spill.append("c", p, 0.0)
        spill.flush()
        assert [m.payload for m in spill.take(150)] == payloads[:150]
        assert [m.payload for m in spill.take(1000)] == payloads[150:]


def test_an_offset_past_the_end_means_everything_was_taken(tmp_path: Path) -> None:
    # take() cuts the file before it resets the offset; a death in between leaves this.
    (tmp_path / "spill").write_bytes(struct.pack("<8sIIQQ", b"APSPILL\0", 1, 0, 5000, 0))
    with Spill.open(tmp_path, max_bytes=100) as spill:
        assert spill.pending == 0
        spill.append("c", b"new", 1.0)
    with Spill.open(tmp_path, max_bytes=100) as spill:
        assert spill.take(5) == [SpilledMessage("c", b"new", 1.0)]


def test_a_header_torn_at_creation_is_a_fresh_file(tmp_path: Path) -> None:
    (tmp_path / "spill").write_bytes(b"APSP")
    with Spill.open(tmp_path, max_bytes=100) as spill:
        assert spill.pending == 0
        spill.append("c", b"x", 0.0)
        assert spill.take(1) == [SpilledMessage("c", b"x", 0.0)]


@pytest.mark.parametrize("content", [b"not a spill file at all, but longer than the header", b"{}\n"])
def test_something_else_in_the_place_of_the_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "spill").write_bytes(content)
    with pytest.raises(SpillError, match=r"spill is not an asyncphp spill file \(it starts with \""):
        Spill.open(tmp_path, max_bytes=100)
    assert (tmp_path / "spill").read_bytes() == content, "a file that is not ours is left alone"


def test_another_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spill").write_bytes(struct.pack("<8sIIQQ", b"APSPILL\0", 2, 0, HEADER_SIZE, 0))
    with pytest.raises(SpillError, match="version 2"):
        Spill.open(tmp_path, max_bytes=100)


def test_a_file_in_the_place_of_the_directory_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"")
    with pytest.raises(SpillError, match="state/spill"):
        Spill.open(tmp_path / "state", max_bytes=100)


# --- property: any mix of appends, takes, flushes and reopens yields each record once, in order

# Appends come in bursts and "take" with None takes all records but one: with a small max_bytes
# that reaches the refused append, the emptied file, and the compaction of a file that never
# empties followed by a reopen, which single random steps almost never do.
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"), st.sampled_from(["a", "ch\n2"]), st.binary(max_size=20), st.integers(1, 6)
        ),
        st.tuples(st.just("take"), st.one_of(st.integers(0, 3), st.none())),
        st.tuples(st.just("flush")),
        st.tuples(st.just("reopen")),
    ),
    min_size=5,
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, max_bytes=st.integers(0, 100))  # small: the compaction of a file that never empties
def test_records_come_back_once_and_in_order(ops: list[tuple[object, ...]], max_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        spill = Spill.open(Path(directory), max_bytes)
        accepted: list[SpilledMessage] = []
        taken: list[SpilledMessage] = []
        try:
            for n, op in enumerate(ops):
                if op[0] == "append":
                    _, channel, payload, count = op
                    assert isinstance(channel, str) and isinstance(payload, bytes) and isinstance(count, int)
                    for i in range(count):
                        if spill.pending_bytes + size_of(channel, payload) <= max_bytes:  # as Overflow
                            spill.append(channel, payload, n + i / 10)
                            accepted.append(SpilledMessage(channel, payload, n + i / 10))
                elif op[0] == "take":
                    limit = op[1] if isinstance(op[1], int) else max(spill.pending - 1, 0)
                    got = spill.take(limit)
                    assert len(got) == min(limit, len(accepted) - len(taken))
                    taken.extend(got)
                elif op[0] == "flush":
                    spill.flush()
                else:
                    spill.close()
                    spill = Spill.open(Path(directory), max_bytes)
                    assert spill.discarded_bytes == 0
                assert taken == accepted[: len(taken)]
                assert spill.pending == len(accepted) - len(taken)
                assert spill.pending_bytes <= max_bytes
            taken.extend(spill.take(len(accepted)))
            assert taken == accepted
            assert os.path.getsize(Path(directory) / "spill") == HEADER_SIZE
        finally:
            spill.close()


# --- DropReport


def test_the_first_drop_is_reported_at_once() -> None:
    report = DropReport()
    line = report.drop(
        "commands", b'{"user": 42}', now=100.0, reason="the queue is full and no state_dir is set"
    )
    assert line == (
        'dropped a message on commands (the queue is full and no state_dir is set; 1 dropped so far): "'
        '{\\"user\\": 42}"'
    )
    assert report.due(100.5) is None


def test_later_drops_make_at_most_one_line_per_second() -> None:
    report = DropReport()
    reason = "the queue and the spill file are full"
    assert report.drop("commands", b"m0", 10.0, reason=reason) is not None
    for i in range(1, 1234):
        assert report.drop("commands", b"m%d" % i, 10.0 + i / 2000, reason=reason) is None
    assert report.due(10.99) is None
    assert report.due(11.0) == (
        "dropped 1233 messages on commands (the queue and the spill file are full; 1234 dropped so far); "
        'first: "m1"'
    )
    # The next window began at 11.0: a drop at 11.5 waits for it to end.
    assert report.drop("events", b"late", 11.5, reason=reason) is None
    assert report.drop("commands", b"later", 11.6, reason="the spill file cannot be written") is None
    assert report.due(12.0) == (
        "dropped 2 messages on events (1), commands (1) (the queue and the spill file are full; "
        'the spill file cannot be written; 1236 dropped so far); first: "late"'
    )
    assert report.total == 1236


def test_a_quiet_second_closes_the_window() -> None:
    report = DropReport()
    assert report.drop("c", b"a", 0.0, reason="full") is not None
    assert report.due(1.0) is None
    assert (
        report.drop("c", b"b", 1.2, reason="full") == 'dropped a message on c (full; 2 dropped so far): "b"'
    )


def test_a_drop_after_the_window_ended_reports_without_waiting_for_due() -> None:
    report = DropReport()
    report.drop("c", b"a", 0.0, reason="full")
    assert report.drop("c", b"b", 0.5, reason="full") is None
    assert report.drop("c", b"c", 1.5, reason="full") == (
        'dropped 2 messages on c (full; 3 dropped so far); first: "b"'
    )
    assert report.due(2.0) is None


def test_flush_reports_what_is_left_at_a_stop() -> None:
    report = DropReport()
    assert report.flush() is None
    report.drop("c", b"a", 0.0, reason="full")
    report.drop("c", b"b" * 300, 0.1, reason="full")
    line = report.flush()
    assert line is not None and line.endswith("… (300 bytes)")
    assert report.flush() is None
