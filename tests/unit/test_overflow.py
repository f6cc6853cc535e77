"""Overflow: the order of kept messages across the two spill files, their shared bound, drops."""

from __future__ import annotations

import logging
import resource
import signal
from pathlib import Path

import pytest

from asyncphp.core.jobs import Counters
from asyncphp.loop.overflow import Overflow
from asyncphp.ops.metrics import Metrics


def overflow(state: Path | str, max_bytes: int = 1 << 20) -> tuple[Overflow, Counters]:
    counters = Counters()
    return Overflow(str(state), max_bytes, counters, Metrics(), logging.getLogger("test")), counters


def test_jobs_that_leave_the_queue_run_before_every_newer_message_kept(tmp_path: Path) -> None:
    kept, counters = overflow(tmp_path)
    for n in (3, 4):
        kept.keep("c", b"%d" % n, "the queue is full")
    for n in (1, 2):  # were queued before 3 and 4 came: given up, or still queued at a stop
        kept.keep_older("c", b"%d" % n, 0.0, n, "the drain ended")
    kept.turn(0.0)
    assert kept.waiting == 4 and counters.spilled == 4
    taken = kept.take(3)
    assert [m.payload for m in taken] == [b"1", b"2", b"3"]
    assert [m.attempt for m in taken] == [1, 2, 1], "an attempt number survives the spill file"
    kept.close()
    again, _ = overflow(tmp_path)  # the next start
    assert [m.payload for m in again.take(10)] == [b"4"] and again.waiting == 0


def test_one_bound_for_both_files_and_drops_past_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kept, counters = overflow(tmp_path, max_bytes=100)
    kept.keep("c", b"x" * 60, "the queue is full")
    kept.keep_older("c", b"y" * 60, 0.0, 1, "the pool stayed unreachable")
    assert (counters.spilled, counters.dropped) == (1, 1)
    assert "the spill files hold max_spill_bytes (100)" in caplog.text


def test_without_a_state_dir_everything_is_dropped_with_a_line(caplog: pytest.LogCaptureFixture) -> None:
    kept, counters = overflow("")
    assert not kept.keeps
    for _ in range(3):
        kept.keep("c", b"{}", "the queue is full")
    assert counters.dropped == 3 and kept.waiting == 0 and kept.take(5) == []
    assert len(caplog.records) == 1, "the first at once, the rest aggregated"


def test_a_file_that_cannot_be_written_rests_a_second_instead_of_failing_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Found in review: take() flushed first, and a full disk raised out of the event loop.
    kept, _ = overflow(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        try:
            for _ in range(100):
                kept.keep("c", b"x" * 100, "the queue is full")
            assert kept.take(1) == []
        finally:
            signal.signal(signal.SIGXFSZ, previous)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "cannot write the spill file" in caplog.text and not kept.replayable
