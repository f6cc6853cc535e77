"""Overflow: the order of kept messages across spill files, their shared bound, drops, and a
disk that fills up."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from asyncphp.core.jobs import Counters
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.overflow import RECORD_OVERHEAD, Overflow


def overflow(state: Path | str, max_bytes: int = 1 << 20) -> tuple[Overflow, Counters]:
    counters = Counters()
    return Overflow(str(state), max_bytes, counters, Metrics(), logging.getLogger("test")), counters


def payloads(kept: Overflow, limit: int = 100) -> list[bytes]:
    return [m.payload for m in kept.take(limit)]


def test_jobs_that_leave_the_queue_run_before_every_message_kept_before_them(tmp_path: Path) -> None:
    kept, counters = overflow(tmp_path)
    for n in (5, 6):
        kept.keep("c", b"%d" % n, "the queue is full")
    # Were queued before 5 and 6 came: given up for an unreachable pool, oldest first.
    kept.keep_older([("c", b"3", 0.0, 1), ("c", b"4", 0.0, 2)], "the pool stayed unreachable")
    kept.keep("c", b"7", "the queue is full")
    kept.turn(0.0)
    taken = kept.take(1)
    assert [m.payload for m in taken] == [b"3"]
    # A stop while replaying: what was queued (1, 2, taken from the files before 3) goes first again.
    kept.keep_older([("c", b"1", 0.0, 1), ("c", b"2", 0.0, 1)], "the drain ended")
    kept.close()
    again, _ = overflow(tmp_path)  # the next start
    taken = again.take(100)
    assert [m.payload for m in taken] == [b"1", b"2", b"4", b"5", b"6", b"7"]
    assert [m.attempt for m in taken] == [1, 1, 2, 1, 1, 1], "an attempt number survives the spill files"
    assert counters.spilled == 7
    again.close()
    assert [p.name for p in tmp_path.iterdir()] == [], "emptied files are removed"


def test_one_bound_for_all_files_and_drops_past_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kept, counters = overflow(tmp_path, max_bytes=100)
    kept.keep("c", b"x" * 60, "the queue is full")
    kept.keep_older([("c", b"y" * 60, 0.0, 1)], "the pool stayed unreachable")
    assert (counters.spilled, counters.dropped) == (1, 1)
    assert "the spill files hold max_spill_bytes (100)" in caplog.text


def test_the_bound_holds_across_a_restart_and_a_message_larger_than_it_is_dropped(tmp_path: Path) -> None:
    one = RECORD_OVERHEAD + len("c") + 10
    kept, counters = overflow(tmp_path, max_bytes=3 * one)
    for _ in range(4):
        kept.keep("c", b"x" * 10, "the queue is full")
    kept.keep_older([("c", b"x" * 10, 0.0, 1)], "the drain ended")
    assert (counters.spilled, counters.dropped) == (3, 2)
    kept.turn(0.0)
    kept.take(1)
    kept.keep("c", b"x" * 10, "the queue is full")
    kept.keep("c", b"", "the queue is full")  # smaller, still past the bound
    assert (counters.spilled, counters.dropped) == (4, 3)
    kept.close()
    again, counters = overflow(tmp_path, max_bytes=3 * one)
    again.keep("c", b"x" * 10, "the queue is full")
    assert (counters.spilled, counters.dropped, again.waiting) == (0, 1, 3), (
        "the bound holds across a restart"
    )
    roomy, counters = overflow(tmp_path / "roomy", max_bytes=100)
    roomy.keep("c", b"x" * 100, "the queue is full")
    assert (counters.spilled, counters.dropped, roomy.waiting) == (0, 1, 0)


def test_without_a_state_dir_everything_is_dropped_with_a_line(caplog: pytest.LogCaptureFixture) -> None:
    kept, counters = overflow("")
    assert not kept.keeps
    for _ in range(3):
        kept.keep("c", b"{}", "the queue is full")
    assert counters.dropped == 3 and kept.waiting == 0 and kept.take(5) == []
    assert len(caplog.records) == 1, "the first at once, the rest aggregated"


# A full disk, played by RLIMIT_FSIZE (writes past 4 kB fail with EFBIG) in a child process: the
# limit would stop the test runner too, whose output may be a file.
DISK_FULL = """
import json, logging, resource, signal, sys, time
from pathlib import Path
from asyncphp.core.jobs import Counters
from asyncphp.loop.overflow import Overflow
from asyncphp.loop.metrics import Metrics

class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []
    def emit(self, record):
        self.lines.append(record.getMessage())

log, lines, counters = logging.getLogger("disk"), Lines(), Counters()
log.addHandler(lines)
log.propagate = False
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
kept = Overflow(sys.argv[1], 1 << 20, counters, Metrics(), log)
for _ in range(100):
    kept.keep("c", b"x" * 100, "the queue is full")  # 11.6 kB: more than the disk takes
now = time.monotonic()
kept.turn(now)
kept.turn(now)  # resting: not tried again
kept.keep("c", b"new", "the queue is full")
dropped_while_failing = counters.dropped
taken = len(kept.take(100))
kept.turn(now + 1.5)
for _ in range(100):
    kept.keep("c", b"y" * 100, "the queue is full")
kept.close()
print(json.dumps({"lines": lines.lines, "dropped_while_failing": dropped_while_failing,
                  "taken": taken, "dropped": counters.dropped}))
"""


def test_a_disk_that_fills_up_rests_drops_new_messages_and_still_gives_back_what_it_holds(
    tmp_path: Path,
) -> None:
    # Found in a fault run: a full disk made the files unreadable too (reading waited for writing),
    # an ERROR line every loop turn, nothing replayed, and what was in memory lost at the stop
    # without a count.
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen = json.loads(done.stdout)
    said = "\n".join(seen["lines"])
    assert said.count("cannot write the spill file") == 2, said  # once while running, once at the stop
    assert seen["dropped_while_failing"] == 1 and "the spill files cannot be written" in said
    assert seen["taken"] == 100, "what is on disk and in memory comes back"
    assert "spill files writable again" in said
    lost = seen["dropped"] - 1
    assert lost > 0 and f"{lost} message(s) kept in memory for it are lost" in said


def test_a_spill_file_with_a_damaged_header_is_set_aside_and_the_others_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Old behaviour (issue 23, item 14): the daemon would not start (exit 2), and the messages kept in
    # every spill file never ran.
    kept, _ = overflow(tmp_path)
    kept.keep("c", b"1", "the queue is full")
    kept.keep_older([("c", b"0", 0.0, 1)], "the drain ended")  # a second file, before the first
    kept.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2, files
    damaged = tmp_path / files[0]
    damaged.write_bytes(b"garbage!" + damaged.read_bytes()[8:])
    with caplog.at_level(logging.ERROR):
        again, _ = overflow(tmp_path)
    assert payloads(again) == [b"1"], "the whole file is replayed"
    (line,) = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert (
        f"{damaged} is not an asyncphp spill file" in line
        and f"set aside as {damaged.name}.damaged-1" in line
    )
    assert (tmp_path / f"{damaged.name}.damaged-1").read_bytes()[:8] == b"garbage!", "kept for a person"
