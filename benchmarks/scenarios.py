"""The benchmark's scenarios. Each starts its own servers in a temp dir and returns figures."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, Server
from benchmarks import drivers

ROOT = Path(__file__).resolve().parent.parent
POOL_CONF = ROOT / "fpm-pool" / "commands.conf"
SEED_WORKER = ROOT / "fpm-pool" / "worker.php"


@dataclass
class Options:
    runs: int = 3
    burst: int = 20_000
    rate: float = 200.0
    latency_seconds: float = 10.0
    wrk_seconds: float = 5.0
    soak: int = 0  # messages; 0 skips the soak


# How the daemon logs in a scenario. "shipped" is the unit's log level (INFO, one line per job)
# to stderr, here a file; "journal" is the same level through python-systemd's handler into a
# journald, as under the unit; "quiet" is WARNING (no line per job), the floor logging adds to.
LOG_LEVELS = {"shipped": "INFO", "journal": "INFO", "journalfields": "INFO", "quiet": "WARNING"}


@contextmanager
def servers(pool_overrides: dict[str, str | None] | None = None) -> Iterator[tuple[Path, RedisServer, Pool]]:
    """A private Redis and a private pool from the shipped commands.conf."""
    with sandbox.private_servers("asyncphp-bench-", POOL_CONF, pool_overrides) as (box, redis_server, pool):
        yield box.workdir, redis_server, pool


def start_daemon(
    redis_server: RedisServer,
    pool: Pool,
    worker: Path,
    *extra: str,
    logging: str = "shipped",
    pure: bool = False,
) -> Server:
    log = pool.worker_log.parent / "daemon.log"
    args = ("--log-level", LOG_LEVELS[logging], *extra)
    if logging == "journalfields":
        args += ("--journal-fields", "true")
    if logging.startswith("journal"):
        daemon = _start_under_journald(redis_server, pool, worker, args, log)
    else:
        env = {"PYTHONPATH": str(pure_source())} if pure else None
        daemon = sandbox.start_daemon(redis_server.url, pool.listen, worker, *args, log=log, env=env)
    try:
        sandbox.subscribed(redis_server.url, "commands", durable="--stream" in extra)
    except BaseException:
        daemon.stop()
        raise
    return daemon


class JournaledDaemon(Server):
    """The daemon started under a private journald (see drivers.under_journald), which is
    stopped with it."""

    journald_pid: int = 0

    def stop(self, timeout: float = 10.0) -> int:
        code = super().stop(timeout)
        if self.journald_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.journald_pid, signal.SIGKILL)
        return code


def _start_under_journald(
    redis_server: RedisServer, pool: Pool, worker: Path, args: tuple[str, ...], log: Path
) -> JournaledDaemon:
    why_not = drivers.journal_available()
    if why_not:
        raise Skipped(f"the journal scenario {why_not}")
    pidfile = log.parent / "journald.pid"
    command = [
        *drivers.under_journald(pidfile), sys.executable, "-m", "asyncphp.loop.daemon",
        "--redis-url", redis_server.url, "--fpm-socket", pool.listen, "--worker-script", str(worker), *args,
    ]  # fmt: skip
    with log.open("ab") as output:
        # sandbox.daemon_env: a NOTIFY_SOCKET inherited from a container would name a socket under
        # the /run the wrapper hides.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=output, env=sandbox.daemon_env())
    daemon = JournaledDaemon("asyncphp-daemon", process, log)
    try:
        sandbox.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 10, "journald")
    except BaseException:
        daemon.stop()
        raise
    daemon.journald_pid = int(pidfile.read_text())
    return daemon


class Skipped(Exception):
    """A scenario this machine cannot run; the reason is printed in its place."""


_PURE: list[Path] = []


def pure_source() -> Path:
    """A copy of the installed package without its mypyc-compiled modules, for PYTHONPATH: the
    same code as plain Python, beside the compiled build in the same run."""
    import asyncphp

    package = Path(asyncphp.__file__).parent
    if not any(package.rglob("*.so")):
        raise Skipped("the install is plain Python (ASYNCPHP_COMPILE=0): nothing to compare")
    if not _PURE:
        copy = Path(tempfile.mkdtemp(prefix="asyncphp-bench-pure-"))
        atexit.register(shutil.rmtree, copy, True)
        shutil.copytree(package, copy / "asyncphp", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        _PURE.append(copy)
    return _PURE[0]


def pool_capacity(options: Options) -> dict[str, float]:
    """Requests per second through nginx + wrk, at concurrency = max_children and 50, and
    nginx's own CPU (master and workers) per request around each run."""
    figures = {}
    with servers() as (workdir, _, pool):
        nginx, port = drivers.start_nginx(workdir / "nginx", pool.listen)
        try:
            drivers.wrk(port, 5, 1)  # warm: the ondemand pool forks its children
            for connections in (5, 50):
                cpu_before = drivers.tree_cpu_seconds(nginx.pid)
                rate, requests = drivers.wrk(port, connections, options.wrk_seconds)
                cpu = drivers.tree_cpu_seconds(nginx.pid) - cpu_before
                figures[f"c{connections}"] = rate
                figures[f"cpu_us_c{connections}"] = cpu / requests * 1e6
        finally:
            nginx.stop()
    return figures


def burst(
    options: Options, durable: bool = False, logging: str = "quiet", pure: bool = False
) -> dict[str, float]:
    """N messages published in pipelines (added to a stream, ``durable``); seconds until N lines are
    in the worker log; the daemon's CPU time per message (user and system) and its RSS before and
    after; with ``logging="journal"``, also journald's CPU per message."""
    extra = ("--stream", "commands") if durable else ()
    with servers() as (_, redis_server, pool):
        daemon = start_daemon(redis_server, pool, drivers.WORKER, *extra, logging=logging, pure=pure)
        journald = daemon.journald_pid if isinstance(daemon, JournaledDaemon) else 0
        try:
            lines = drivers.LineCounter(pool.worker_log)
            rss_before = drivers.rss_mb(daemon.pid)
            user_before, system_before = drivers.cpu_split(daemon.pid)
            journald_before = drivers.cpu_seconds(journald) if journald else 0.0
            redis_before = drivers.cpu_seconds(redis_server.pid)
            started = time.monotonic()
            drivers.publish_burst(redis_server.url, options.burst, durable=durable)
            lines.wait_for(options.burst, timeout=300)
            elapsed = time.monotonic() - started
            user, system = drivers.cpu_split(daemon.pid)
            figures = {
                "seconds": elapsed,
                "rate": options.burst / elapsed,
                "cpu_us_per_message": (user + system - user_before - system_before) / options.burst * 1e6,
                "user_us_per_message": (user - user_before) / options.burst * 1e6,
                "system_us_per_message": (system - system_before) / options.burst * 1e6,
                "rss_before_mb": rss_before,
                "rss_after_mb": drivers.rss_mb(daemon.pid),
                # Publishing included: Redis's whole share of the box per message.
                "redis_us_per_message": (drivers.cpu_seconds(redis_server.pid) - redis_before)
                / options.burst
                * 1e6,
            }
            if journald:
                figures["journald_us_per_message"] = (
                    (drivers.cpu_seconds(journald) - journald_before) / options.burst * 1e6
                )
                figures["journal_lines"] = drivers.journal_lines(journald, "asyncphp-daemon")
            lines.update()
            if lines.count != options.burst:
                raise RuntimeError(f"{lines.count} worker lines for {options.burst} messages")
        finally:
            daemon.stop()
    return figures


def latency(options: Options) -> dict[str, float]:
    """Publish → worker start at a paced rate, beside the floor: the same stream into a bare
    redis-py subscriber. The first second of each is a warm-up and not counted."""
    warmup = int(options.rate)
    total = warmup + int(options.rate * options.latency_seconds)
    seconds = total / options.rate
    with servers() as (workdir, redis_server, pool):
        floor_log = workdir / "floor.log"
        floor = drivers.start_bare_subscriber(redis_server.url, "floor", floor_log, total)
        sandbox.subscribed(redis_server.url, "floor")
        drivers.publish_paced(redis_server.url, options.rate, seconds, channel="floor")
        floor.wait(30)

        daemon = start_daemon(redis_server, pool, drivers.WORKER)
        try:
            drivers.publish_paced(redis_server.url, options.rate, seconds)
            drivers.LineCounter(pool.worker_log).wait_for(total, timeout=60)
        finally:
            daemon.stop()
        measured = {
            "floor": percentiles(drivers.latencies(floor_log, skip=warmup)),
            "asyncphp": percentiles(drivers.latencies(pool.worker_log, skip=warmup)),
        }
        return {f"{who}_{key}": value for who, figures in measured.items() for key, value in figures.items()}


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1], "n": len(ordered)}


def soak(options: Options) -> dict[str, float]:
    """``options.soak`` messages, kept under the queue limit, with the daemon's RSS sampled."""
    count, window = options.soak, 5_000  # published but not yet run: a steady load, not one long burst
    with servers() as (_, redis_server, pool):
        daemon = start_daemon(redis_server, pool, drivers.WORKER)
        try:
            lines = drivers.LineCounter(pool.worker_log)
            samples = {"rss_start_mb": drivers.rss_mb(daemon.pid)}
            cpu_before = drivers.cpu_seconds(daemon.pid)
            started = time.monotonic()
            sent = 0
            while sent < count:
                batch = min(window // 2, count - sent)
                while sent - lines.update() > window:
                    time.sleep(0.005)
                drivers.publish_burst(redis_server.url, batch)
                sent += batch
                if "rss_warm_mb" not in samples and lines.count >= min(100_000, count // 10):
                    samples["rss_warm_mb"] = drivers.rss_mb(daemon.pid)
            lines.wait_for(count, timeout=600)
            samples["seconds"] = time.monotonic() - started
            samples["cpu_us_per_message"] = (drivers.cpu_seconds(daemon.pid) - cpu_before) / count * 1e6
            samples["rss_end_mb"] = drivers.rss_mb(daemon.pid)
            samples.setdefault("rss_warm_mb", samples["rss_start_mb"])
        finally:
            daemon.stop()
    return samples


def seed(options: Options, pool_overrides: dict[str, str | None] | None = None) -> dict[str, float]:
    """The original's scenario: 10 messages at once into the shipped pool, the sleeping worker;
    seconds until all ten finished, and the most children the pool had."""
    with servers(pool_overrides) as (_, redis_server, pool):
        daemon = start_daemon(redis_server, pool, SEED_WORKER)
        try:
            access = drivers.LineCounter(pool.access_log)
            started = time.monotonic()
            drivers.publish_burst(redis_server.url, 10)
            peak = 0
            while access.update() < 10:
                peak = max(peak, len(pool.children()))
                if time.monotonic() - started > 60:
                    raise TimeoutError("the ten jobs did not finish in 60 s")
                time.sleep(0.005)
            children_rss = sum(_rss_or_zero(pid) for pid in pool.children())
            return {"seconds": time.monotonic() - started, "children": peak, "children_rss_mb": children_rss}
        finally:
            daemon.stop()


def _rss_or_zero(pid: int) -> float:
    try:
        return drivers.rss_mb(pid)
    except (OSError, RuntimeError):
        return 0.0


def repeat(runs: int, scenario: Callable[[], dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each figure over ``runs`` runs."""
    results = [scenario() for _ in range(runs)]
    return {
        key: {
            "median": statistics.median(r[key] for r in results),
            "min": min(r[key] for r in results),
            "max": max(r[key] for r in results),
        }
        for key in results[0]
    }


def machine() -> dict[str, str]:
    def first_line(*args: str) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
        except OSError:
            return "not found"
        return (done.stdout or done.stderr).strip().splitlines()[0]

    import os
    import platform

    import hiredis
    import redis

    from asyncphp.version import __version__

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.machine(),
    )  # fmt: skip
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis-py": f"{redis.__version__} (hiredis {hiredis.__version__})",
        "redis-server": first_line("redis-server", "--version"),
        "php-fpm": first_line(sandbox.find_php_fpm(), "-v"),
        "nginx": first_line("nginx", "-v"),
        "wrk": first_line("wrk", "-v"),
        "asyncphp": __version__,
    }
