"""Overflow: the order of kept messages across the two spill files, their shared bound, drops."""

from __future__ import annotations

import logging
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
        kept.keep_older("c", b"%d" % n, 0.0, "the drain ended")
    kept.turn(0.0)
    assert kept.waiting == 4 and counters.spilled == 4
    assert [m.payload for m in kept.take(3)] == [b"1", b"2", b"3"]
    kept.close()
    again, _ = overflow(tmp_path)  # the next start
    assert [m.payload for m in again.take(10)] == [b"4"] and again.waiting == 0


def test_one_bound_for_both_files_and_drops_past_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kept, counters = overflow(tmp_path, max_bytes=100)
    kept.keep("c", b"x" * 60, "the queue is full")
    kept.keep_older("c", b"y" * 60, 0.0, "the pool stayed unreachable")
    assert (counters.spilled, counters.dropped) == (1, 1)
    assert "the spill files hold max_spill_bytes (100)" in caplog.text


def test_without_a_state_dir_everything_is_dropped_with_a_line(caplog: pytest.LogCaptureFixture) -> None:
    kept, counters = overflow("")
    assert not kept.keeps
    for _ in range(3):
        kept.keep("c", b"{}", "the queue is full")
    assert counters.dropped == 3 and kept.waiting == 0 and kept.take(5) == []
    assert len(caplog.records) == 1, "the first at once, the rest aggregated"
