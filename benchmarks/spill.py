"""python -m benchmarks.spill: the spill files (loop/overflow.py) beside a SQLite store in WAL mode
with synchronous=NORMAL (benchmarks/spill_sqlite.py, the candidate that lost) and the files as they
were before they came into one module (loaded from git: ``before``), in one run: µs per message to
keep and to take back, the worst loop turn, the start on a full store, and what a kill -9
mid-write costs.

Both are driven as the engine drives Overflow: ``keep()`` per message and ``turn()`` once per loop
turn (``--batch`` messages a turn in a burst, and 1: a message a turn), then ``take(1)`` per
message with a ``turn()`` every 1,000 (engine.REPLAY_BATCH). Each case runs the two stores one
after the other in a fresh temp dir, so compare the columns of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from asyncphp.core.jobs import Counters
from asyncphp.loop import overflow
from asyncphp.loop.metrics import Metrics
from benchmarks import spill_sqlite

REPO = Path(__file__).resolve().parent.parent
REPLAY_BATCH = 1000  # engine.REPLAY_BATCH
BIG = 1 << 40  # max_spill_bytes: nothing dropped here


class Kept(Protocol):
    waiting: int

    def keep(self, channel: str, payload: bytes, why: str) -> None: ...
    def take(self, limit: int) -> list[Any]: ...
    def turn(self, now: float) -> None: ...
    def close(self) -> None: ...


Make = Callable[[str, logging.Logger], Kept]


def baseline(rev: str | None) -> tuple[str, Make]:
    """The Overflow of the spill files from ``rev`` (default: the last commit with loop/spill.py)."""
    if rev is None:
        deleted = git("log", "-1", "--format=%H", "--diff-filter=D", "--", "src/asyncphp/loop/spill.py")
        rev = f"{deleted}^" if deleted else "HEAD"
    rev = git("rev-parse", "--short", rev)
    spill = sys.modules["_baseline_spill"] = types.ModuleType("_baseline_spill")  # for its dataclass
    exec(
        compile(git("show", f"{rev}:src/asyncphp/loop/spill.py"), "baseline/spill.py", "exec"), spill.__dict__
    )
    files = sys.modules["_baseline_overflow"] = types.ModuleType("_baseline_overflow")
    source = git("show", f"{rev}:src/asyncphp/loop/overflow.py").replace(
        "asyncphp.loop.spill", spill.__name__
    )
    exec(compile(source, "baseline/overflow.py", "exec"), files.__dict__)
    return rev, lambda state, log: files.Overflow(state, BIG, Counters(), Metrics(), log)  # type: ignore[no-any-return]


def files(state: str, log: logging.Logger) -> Kept:
    return overflow.Overflow(state, BIG, Counters(), Metrics(), log)


def sqlite(state: str, log: logging.Logger) -> Kept:
    return spill_sqlite.Overflow(state, BIG, Counters(), Metrics(), log)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def quiet() -> logging.Logger:
    log = logging.getLogger("benchmarks.spill")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


def payload(n: int, size: int) -> bytes:
    head = b'{"n": %d, "pad": "' % n
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def run_case(make: Make, count: int, size: int, batch: int) -> dict[str, float]:
    """One store through keep, a restart and take; µs per message and the worst turn in ms."""
    log = quiet()
    body = [payload(i, size) for i in range(min(count, 1000))]  # built before the clock runs
    with tempfile.TemporaryDirectory(prefix="spill-bench-") as state:
        kept = make(state, log)
        worst = 0.0
        started = time.perf_counter()
        for i in range(count):
            kept.keep("commands", body[i % len(body)], "the queue is full")
            if (i + 1) % batch == 0:
                t = time.perf_counter()
                kept.turn(time.monotonic())
                worst = max(worst, time.perf_counter() - t)
        kept.turn(time.monotonic())
        keep = time.perf_counter() - started
        kept.close()
        disk = sum(p.stat().st_size for p in Path(state).iterdir())

        t = time.perf_counter()
        again = make(state, log)
        opened = time.perf_counter() - t
        assert again.waiting == count, (again.waiting, count)
        worst_take, got, first = 0.0, 0, None
        started = time.perf_counter()
        while True:
            t = time.perf_counter()
            taken = 0
            for _ in range(REPLAY_BATCH):
                message = again.take(1)
                if not message:
                    break
                first = first or message[0].payload
                taken += 1
            again.turn(time.monotonic())
            worst_take = max(worst_take, time.perf_counter() - t)
            got += taken
            if taken < REPLAY_BATCH:
                break
        take = time.perf_counter() - started
        again.close()
        assert got == count and first == body[0], (got, count)
        assert not list(Path(state).iterdir()), "an emptied store is removed"
    return {
        "keep_us": keep / count * 1e6, "keep_worst_ms": worst * 1e3, "take_us": take / count * 1e6,
        "take_worst_ms": worst_take * 1e3, "open_ms": opened * 1e3, "disk_mb": disk / 1e6,
    }  # fmt: skip


# --- a kill -9 mid-write

CHILD = """
import logging, sys, time
sys.path[:0] = {path!r}
import benchmarks.spill as bench
make = bench.files if sys.argv[1] == "files" else bench.sqlite
kept = make(sys.argv[2], bench.quiet())
n = 0
while True:
    for _ in range({batch}):
        kept.keep("commands", bench.payload(n, {size}), "the queue is full")
        n += 1
    kept.turn(time.monotonic())
    print(n, flush=True)  # written: a turn ends after its write
"""


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def kill_case(which: str, make: Make, size: int, batch: int, cut: int, seed: int) -> dict[str, Any]:
    """A writer killed at a random moment, ``cut`` bytes then cut off the end of the file it
    wrote last (0: as the kill left it); what the next start gives back and says."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="spill-kill-") as state:
        code = CHILD.format(path=sys.path[:3], batch=batch, size=size)
        child = subprocess.Popen(
            [sys.executable, "-c", code, which, state], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        assert child.stdout is not None
        written = int(child.stdout.readline())  # started
        time.sleep(rng.uniform(0.2, 0.6))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        written = max([written, *(int(n) for n in out.split())])
        if cut:
            wal = Path(state) / f"{spill_sqlite.FILE_NAME}-wal"
            last = wal if wal.exists() else next(Path(state).glob("spill.*"))
            os.truncate(last, max(0, last.stat().st_size - cut))
        lines = Lines()
        log = logging.getLogger(f"kill.{which}.{seed}")
        log.propagate = False
        log.addHandler(lines)
        kept = make(state, log)
        got = []
        while taken := kept.take(1):  # as the engine does (the old take(n) fails past n/2 chunks)
            got.append(json.loads(taken[0].payload)["n"])
        kept.close()
    return {
        "written": written, "back": len(got), "in_order": got == list(range(len(got))),
        "errors": [line for line in lines.lines if line.startswith("ERROR")],
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10000,100000", help="messages per case (default: %(default)s)")
    parser.add_argument("--sizes", default="200,10000", help="payload bytes (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=256, help="messages kept per loop turn in a burst")
    parser.add_argument("--kills", type=int, default=5, help="kill -9 runs per store and cut")
    parser.add_argument("--baseline", help="git revision of the spill files (default: before they went)")
    args = parser.parse_args(argv)
    rev, before = baseline(args.baseline)
    print(f"files: loop/overflow.py · before: loop/overflow.py + loop/spill.py at {rev}")
    print(
        f"sqlite: benchmarks/spill_sqlite.py, SQLite {spill_sqlite.sqlite3.sqlite_version},"
        " WAL, synchronous=NORMAL"
    )
    print(
        f"Python {sys.version.split()[0]} · keep: µs/message, turn() included; take: take(1), as the engine"
    )
    keys = ("keep_us", "keep_worst_ms", "take_us", "take_worst_ms", "open_ms", "disk_mb")
    head = "".join(f"{k:>20}" for k in keys)
    print(f"\n{'messages':>9} {'bytes':>6} {'/turn':>5} {'store':>7}{head}")
    for count in (int(c) for c in args.counts.split(",")):
        for size in (int(s) for s in args.sizes.split(",")):
            for batch in (args.batch, 1):
                for name, make in (("before", before), ("files", files), ("sqlite", sqlite)):
                    figures = run_case(make, count, size, batch)
                    cells = "".join(f"{figures[k]:>20,.2f}" for k in keys)
                    print(f"{count:>9,} {size:>6,} {batch:>5} {name:>7}{cells}", flush=True)

    print("\nkill -9 while writing turns of 256 × 10,000 B; then the end of the last file as left, or cut")
    for cut in (0, 3):
        for name, make in (("files", files), ("sqlite", sqlite)):
            for seed in range(args.kills):
                seen = kill_case(name, make, 10_000, 256, cut, seed)
                errors = "; ".join(e[:110] for e in seen["errors"]) or "no ERROR line"
                print(
                    f"  cut {cut} {name:>6}: {seen['back']:>6,} back of {seen['written']:>6,} written by the"
                    f" last whole turn · in order: {seen['in_order']} · {errors}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
