"""The scheduling scenarios: delayed jobs moved by two daemons, strict priority, a per-stream cap,
a rate shared by two daemons, and one unique key published concurrently. Each starts its own
servers in a temp dir and returns figures; counts are exact, times come from the worker's log."""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from asyncphp import caller
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, Server
from asyncphp.ops import probe
from asyncphp.settings import PoolAddress
from asyncphp.wire import scripts
from asyncphp.wire.keys import Keys
from benchmarks import drivers
from benchmarks.scenarios import POOL_CONF, percentiles, servers

WORKER = drivers.BENCH_DIR.parent / "tests" / "php" / "sched.php"  # the tests' scheduling worker
IN_FLIGHT = 8  # --max-in-flight of every daemon here
STATIC: dict[str, str | None] = {"pm": "static", "pm.max_children": str(IN_FLIGHT)}
STATUS_PATH = "/asyncphp-status"  # commands.conf's pm.status_path


@dataclass(frozen=True)
class Sizes:
    delayed: int = 10_000  # delayed jobs, due evenly over delayed_spread seconds from 2 s on
    delayed_spread: float = 5.0
    priority: int = 2_000  # the backlog of each stream, high and low
    slow: int = 40  # jobs of 200 ms in the stream capped at 2: 4 s of them
    fast: int = 2_000  # jobs of 20 ms beside them, enough to outlast the slow ones
    rate: float = 50.0  # per second, counted over rate_window seconds
    rate_window: float = 10.0
    rate_backlog: int = 2_000
    unique: int = 1_000  # publishes of one unique key, from `publishers` threads
    publishers: int = 10


FULL = Sizes()
QUICK = Sizes(
    delayed=300, delayed_spread=1.0, priority=200, slow=10, fast=400, rate_window=2.0, rate_backlog=400,
    unique=200,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Start:
    stream: str
    n: int
    due: float | None  # ASYNCPHP_DUE_AT, seconds since the epoch
    at: float
    request_id: int  # rises in the order the daemon queued the jobs


@dataclass(frozen=True, slots=True)
class End:
    stream: str
    n: int
    at: float


def worker_lines(path: Path) -> tuple[list[Start], list[End]]:
    """The starts and the ends in a log of tests/php/sched.php (a torn last line is left out)."""
    starts: list[Start] = []
    ends: list[End] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return starts, ends
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if not line.endswith("\n") or not fields:
            continue
        if fields[0] == "start" and len(fields) == 7:
            due = None if fields[4] == "-" else float(fields[4])
            starts.append(Start(fields[1], int(fields[2]), due, float(fields[5]), int(fields[6])))
        elif fields[0] == "end" and len(fields) == 4:
            ends.append(End(fields[1], int(fields[2]), float(fields[3])))
    return starts, ends


class StartCounter:
    """Counts the start lines appended to worker logs, reading only what is new each time."""

    def __init__(self, pools: Sequence[Pool]) -> None:
        self._paths = [pool.worker_log for pool in pools]
        self._offsets = [0] * len(pools)
        self.count = 0

    def update(self) -> int:
        for i, path in enumerate(self._paths):
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self.count += sum(line.startswith(b"start ") for line in data[:end].splitlines())
            self._offsets[i] += end
        return self.count

    def wait_for(self, count: int, timeout: float, daemons: Sequence[Server]) -> None:
        deadline = time.monotonic() + timeout
        while self.update() < count:
            _alive(daemons)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} of {count} jobs started after {timeout:.0f} s")
            time.sleep(0.01)


def _alive(daemons: Sequence[Server]) -> None:
    for daemon in daemons:
        if daemon.process.poll() is not None:
            tail = daemon.log.read_text(errors="replace")[-2000:] if daemon.log.exists() else ""
            raise RuntimeError(f"a daemon exited with {daemon.process.returncode}:\n{tail}")


def most_running(pool: Pool, stream: str) -> int:
    """The most jobs of ``stream`` the worker ever counted running at once."""
    path = Path(f"{pool.worker_log}.{stream}.running")
    return int(path.read_text().split()[1]) if path.exists() else 0


def _readers(url: str) -> int:
    """Connections whose last command was XREADGROUP: one per daemon reading (its reader)."""
    client = redis.Redis.from_url(url)
    try:
        return sum(c.get("cmd") == "xreadgroup" for c in client.client_list())
    finally:
        client.close()


@contextmanager
def daemons(redis_server: RedisServer, pools: Sequence[Pool], *extra: str) -> Iterator[list[Server]]:
    """One daemon per pool (consumers bench-1, bench-2 …) with ``extra`` flags, each reading
    before the next starts; all stopped on exit."""
    started: list[Server] = []
    try:
        for i, pool in enumerate(pools, 1):
            started.append(
                sandbox.start_daemon(
                    redis_server.url, pool.listen, WORKER, "--log-level", "WARNING", "--consumer",
                    f"bench-{i}", "--max-in-flight", str(IN_FLIGHT), *extra,
                    log=pool.worker_log.parent / "daemon.log",
                )
            )  # fmt: skip

            def reading(count: int = i) -> bool:
                _alive(started)
                return _readers(redis_server.url) >= count

            sandbox.wait_until(reading, sandbox.STARTUP_TIMEOUT, f"daemon bench-{i}", started[-1].log)
        yield started
    finally:
        for daemon in reversed(started):
            daemon.stop()


@contextmanager
def second_pool(workdir: Path, overrides: dict[str, str | None]) -> Iterator[Pool]:
    """Another pool from commands.conf, for a second daemon: a second host's."""
    pool = sandbox.start_pool(workdir / "pool2", POOL_CONF, overrides)
    try:
        yield pool
    finally:
        pool.stop()


def add_backlog(url: str, stream: str, count: int, message: dict[str, Any], chunk: int = 1_000) -> None:
    """``count`` entries numbered n = 0… in ``stream``, as enqueue() adds them."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"payload": json.dumps({**message, "n": i})})
        if i % chunk == chunk - 1:
            pipe.execute()
    pipe.execute()
    client.close()


def add_delayed(url: str, stream: str, count: int, first: float, spread: float) -> None:
    """``count`` delayed jobs due evenly from ``first`` to ``first + spread`` s after each add,
    through the ADD script that enqueue() runs, in pipelines (10,000 enqueue() calls would take
    longer than the spread)."""
    client = redis.Redis.from_url(url)
    add = client.register_script(scripts.ADD)
    keys = Keys(stream)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        delay_ms = round((first + spread * i / max(1, count - 1)) * 1000)
        payload = json.dumps({"n": i, "ms": 0}, separators=(",", ":"))
        add(
            keys=list(keys.adding("")),
            args=[payload, scripts.DEFAULT_MAXLEN, delay_ms, -1, "", 0, "processed"],
            client=pipe,
        )
        if i % 1_000 == 999:
            pipe.execute()
    pipe.execute()
    client.close()


def delayed(sizes: Sizes) -> dict[str, float]:
    """Delayed jobs due over ``delayed_spread`` s, moved by two daemons, each with its own pool:
    how many ran, how many twice, how late (worker start minus ASYNCPHP_DUE_AT), and what the MOVE
    script cost Redis per run (from SLOWLOG, which times each command inside Redis)."""
    count, stream = sizes.delayed, "due"
    with servers(STATIC) as (workdir, redis_server, pool), second_pool(workdir, STATIC) as pool2:
        client = redis.Redis.from_url(redis_server.url)
        # Every command is logged, so that each run of MOVE can be found by its keys and timed;
        # the log holds them all (a few per job).
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 1_000_000)
        with daemons(redis_server, [pool, pool2], "--stream", stream) as running:
            client.slowlog_reset()
            client.config_resetstat()
            add_delayed(redis_server.url, stream, count, 2.0, sizes.delayed_spread)
            StartCounter([pool, pool2]).wait_for(count, 2.0 + sizes.delayed_spread + 60, running)
            time.sleep(1.0)  # a job run twice would most likely start within this
            evals = client.info("commandstats").get("cmdstat_eval", {})
            slowlog: list[dict[str, Any]] = client.slowlog_get(-1)
        client.close()
        by_pool = [worker_lines(p.worker_log)[0] for p in (pool, pool2)]
    starts = [s for found in by_pool for s in found if s.stream == stream]
    runs = Counter(s.n for s in starts)
    late = [(s.at - s.due) * 1000 for s in starts if s.due is not None]
    lateness = percentiles(late)
    # MOVE is the only EVAL of the daemons with these keys and the batch size after them.
    moving = Keys(stream).moving()
    marker = " ".join([str(len(moving)), *moving, str(scripts.MOVE_BATCH)]).encode()
    moves = [
        e["duration"] for e in slowlog if e["command"].startswith(b"EVAL ") and marker in e["command"]
    ]  # fmt: skip
    move_cost = percentiles(moves or [math.nan])
    return {
        "jobs": count,
        "spread_s": sizes.delayed_spread,
        "ran": len(runs),
        "ran_twice": sum(1 for times in runs.values() if times > 1),
        "without_due_at": len(starts) - len(late),
        "early": sum(1 for ms in late if ms < 0),
        "late_p50_ms": lateness["p50"],
        "late_p90_ms": lateness["p90"],
        "late_p99_ms": lateness["p99"],
        "late_max_ms": lateness["max"],
        "second_daemon_share": len(by_pool[1]) / max(1, len(starts)),
        "move_runs": len(moves),
        "move_us_mean": sum(moves) / len(moves) if moves else math.nan,
        "move_us_p99": move_cost["p99"],
        "move_us_max": move_cost["max"],
        # Every EVAL the daemons sent: MOVE and the group-position script, for a cross-check.
        "eval_us_per_call": float(evals.get("usec_per_call", math.nan)),
        "slowlog_complete": float(len(slowlog) < 1_000_000),
    }


def priority(sizes: Sizes) -> dict[str, float]:
    """A backlog in "high" and "low" before the daemon starts, read with --priority strict: how
    many low jobs the daemon handed to the pool before the last high one (counted, not timed), and
    how many began before it by the workers' clocks (several children begin jobs handed to them a
    few µs apart in any order)."""
    count = sizes.priority
    with servers(STATIC) as (_, redis_server, pool):
        for stream in ("high", "low"):
            add_backlog(redis_server.url, stream, count, {"ms": 2})
        with daemons(
            redis_server, [pool], "--priority", "strict", "--stream", "high", "--stream", "low"
        ) as d:
            StartCounter([pool]).wait_for(2 * count, 120, d)
        starts = worker_lines(pool.worker_log)[0]
    last_high = max(s.at for s in starts if s.stream == "high")
    last_high_id = max(s.request_id for s in starts if s.stream == "high")
    lows = [s.at for s in starts if s.stream == "low"]
    return {
        "jobs_per_stream": count,
        "high_ran": sum(1 for s in starts if s.stream == "high"),
        "low_ran": len(lows),
        "low_before_last_high": sum(1 for s in starts if s.stream == "low" and s.request_id < last_high_id),
        "low_began_before_last_high": sum(1 for at in lows if at < last_high),
        "first_low_after_last_high_ms": (min(lows) - last_high) * 1000,
        "seconds": max(s.at for s in starts) - min(s.at for s in starts),
    }


def capped(sizes: Sizes) -> dict[str, float]:
    """The stream "slow" (200 ms jobs) capped at 2 with --stream-max-in-flight, beside "fast" (20 ms):
    the most slow ones running, by the worker's own count and by sampling the pool's status page,
    and the most fast ones running beside two slow ones."""
    # One child more than the daemon uses, so that the status page is answered at once.
    pool_overrides: dict[str, str | None] = {"pm": "static", "pm.max_children": str(IN_FLIGHT + 1)}
    slow_ms, fast_ms, pad = 200, 20, "x" * 64
    with servers(pool_overrides) as (_, redis_server, pool):
        # The status page shows each request's body length, not its stream: slow jobs are padded.
        add_backlog(redis_server.url, "slow", sizes.slow, {"ms": slow_ms, "pad": pad})
        add_backlog(redis_server.url, "fast", sizes.fast, {"ms": fast_ms})
        address = PoolAddress.parse(pool.listen)
        sampled = Counter[str]()
        samples = 0
        with daemons(
            redis_server, [pool], "--stream", "slow", "--stream", "fast", "--stream-max-in-flight", "slow=2"
        ) as running:
            total, ends = sizes.slow + sizes.fast, drivers.LineCounter(pool.worker_log)
            deadline = time.monotonic() + 30 + sizes.slow * slow_ms / 1000 + sizes.fast * fast_ms / 1000
            while ends.update() < 2 * total:
                _alive(running)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ends.count // 2} of {total} jobs ran")
                now = Counter[str]()
                for process in _status(address):
                    if process.get("state") == "Running" and process.get("request method") == "POST":
                        now["slow" if int(process.get("content length", 0)) > len(pad) else "fast"] += 1
                for stream in ("slow", "fast"):
                    sampled[stream] = max(sampled[stream], now[stream])
                samples += 1
                time.sleep(0.01)
        starts, finished = worker_lines(pool.worker_log)
        counted = {stream: most_running(pool, stream) for stream in ("slow", "fast")}
    return {
        "slow_jobs": sizes.slow,
        "fast_jobs": sizes.fast,
        "slow_most_counted": counted["slow"],
        "slow_most_sampled": sampled["slow"],
        "fast_most_counted": counted["fast"],
        "fast_most_sampled": sampled["fast"],
        "fast_most_beside_two_slow": _most_beside(starts, finished, "fast", "slow", 2),
        "max_in_flight": IN_FLIGHT,
        "status_samples": samples,
    }


def _status(address: PoolAddress) -> list[dict[str, Any]]:
    """The processes on the pool's full status page (empty if it did not answer)."""
    try:
        response = probe.get(address, STATUS_PATH, "json&full")
    except OSError:
        return []
    page = json.loads(response.head.partition(b"\r\n\r\n")[2])
    processes: list[dict[str, Any]] = page.get("processes", [])
    return processes


def _most_beside(starts: list[Start], ends: list[End], stream: str, other: str, at_least: int) -> int:
    """The most jobs of ``stream`` running at a moment when ``at_least`` of ``other`` were, from
    the start and end times in the worker's log."""
    events = sorted(
        [(s.at, 1, s.stream) for s in starts] + [(e.at, -1, e.stream) for e in ends],
        key=lambda event: (event[0], event[1]),  # at the same time, an end before a start
    )
    now = Counter[str]()
    most = 0
    for _, change, which in events:
        now[which] += change
        if now[other] >= at_least:
            most = max(most, now[stream])
    return most


def rate(sizes: Sizes) -> dict[str, float]:
    """A backlog in "jobs", read by two daemons (each with its own pool) that share
    --stream-rate jobs=<rate>/s: jobs started in the ``rate_window`` seconds from the first start."""
    flag = f"jobs={sizes.rate:g}/s"
    with servers(STATIC) as (workdir, redis_server, pool), second_pool(workdir, STATIC) as pool2:
        with daemons(redis_server, [pool, pool2], "--stream", "jobs", "--stream-rate", flag) as running:
            # Both daemons read before the backlog comes: the bucket is shared from the first job.
            add_backlog(redis_server.url, "jobs", sizes.rate_backlog, {"ms": 0})
            StartCounter([pool, pool2]).wait_for(1, 30, running)
            first = min(s.at for p in (pool, pool2) for s in worker_lines(p.worker_log)[0])
            time.sleep(max(0.0, first + sizes.rate_window + 0.5 - time.time()))
            _alive(running)
        by_pool = [worker_lines(p.worker_log)[0] for p in (pool, pool2)]
    inside = [[s for s in found if first <= s.at < first + sizes.rate_window] for found in by_pool]
    started = sum(len(found) for found in inside)
    return {
        "rate": sizes.rate,
        "window_s": sizes.rate_window,
        "started": started,
        "expected": sizes.rate * sizes.rate_window,
        "second_daemon_share": len(inside[1]) / max(1, started),
        "backlog_left": sizes.rate_backlog - sum(len(found) for found in by_pool),
    }


def unique(sizes: Sizes) -> dict[str, float]:
    """``unique`` enqueue() calls with one unique key from ``publishers`` threads, each with its
    own connection, started together: how many added a job, how many ids came back, XLEN."""
    stream, per_thread = "once", math.ceil(sizes.unique / sizes.publishers)
    with tempfile.TemporaryDirectory(prefix="asyncphp-bench-") as tmp, ExitStack() as stack:
        redis_server = sandbox.start_redis(Path(tmp))
        stack.callback(redis_server.stop)
        barrier = threading.Barrier(sizes.publishers)
        results: list[caller.Enqueued] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def publisher(index: int) -> None:
            client = redis.Redis.from_url(redis_server.url, socket_timeout=5, socket_connect_timeout=5)
            mine = []
            try:
                client.ping()
                barrier.wait(timeout=30)
                for i in range(per_thread):
                    mine.append(
                        caller.enqueue(
                            {"publisher": index, "n": i}, stream=stream, unique_key="same", unique_for=600,
                            client=client,
                        )
                    )  # fmt: skip
            except BaseException as exc:  # reported below: a thread cannot raise into the scenario
                with lock:
                    failures.append(exc)
            finally:
                client.close()
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=publisher, args=(i,)) for i in range(sizes.publishers)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        seconds = time.monotonic() - began
        if failures or any(thread.is_alive() for thread in threads):
            raise RuntimeError(f"a publisher failed: {failures[:1] or 'still running after 60 s'}")
        client = redis.Redis.from_url(redis_server.url)
        length = client.xlen(stream)
        client.close()
    return {
        "publishes": len(results),
        "publishers": sizes.publishers,
        "added": sum(1 for r in results if r.added),
        "ids": len({r.id for r in results}),
        "xlen": length,
        "publishes_per_s": len(results) / seconds,
    }
