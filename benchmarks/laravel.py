"""The Laravel scenarios: one trivial job (tests/laravel's Trivial: a line appended to a file), on
the tests' minimal app, run through asyncphp (the bridge's front controller in a pm = static pool,
the daemon reading the queue's stream) and through `php artisan queue:work` with Laravel's own
Redis driver, with as many workers as the pool has children. Booting Laravel in every request is
this design's known cost: the bridge is run plain, with the config and event caches, and without
opcache, to show what each does to it.

Each run starts its own Redis and pool in a temp dir, starts the consumers, waits for them to
listen, then dispatches the jobs from one artisan process and waits for every line. CPU is the
consumers' own (the daemon, and the pool's master with its children, live and reaped; or the
workers) plus redis-server's, over that window; memory is the children's or the workers' RSS at
the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer
from benchmarks import drivers
from benchmarks.scenarios import POOL_CONF

APP = drivers.BENCH_DIR.parent / "tests" / "laravel"
FRONT = drivers.BENCH_DIR.parent / "php" / "laravel" / "worker.php"
QUEUE = "bench"
VARIANTS = {
    "plain": "opcache on (php-fpm's default), no caches",
    "cached": "opcache on, config:cache and event:cache",
    "no_opcache": "opcache off, no caches",
}


@dataclass(frozen=True)
class Sizes:
    jobs: int = 5_000
    workers: int = 4  # the pool's pm.max_children, the daemon's --max-in-flight, queue:work processes
    timeout: float = 600.0  # seconds for one run's jobs, at most


FULL = Sizes()
QUICK = Sizes(jobs=100, workers=2, timeout=120.0)


@dataclass(frozen=True)
class App:
    env: dict[str, str]
    log: Path

    def artisan(self, *args: str) -> str:
        done = subprocess.run(
            ["php", str(APP / "artisan"), *args], env={**os.environ, **self.env},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"artisan {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout


def make_app(root: Path, redis_server: RedisServer) -> App:
    """The tests' app with storage, caches and a SQLite database of this run's own."""
    storage = root / "storage"
    for sub in ("framework/cache", "framework/views", "framework/sessions", "logs"):
        (storage / sub).mkdir(parents=True)
    (root / "cache").mkdir()
    (root / "app.sqlite").touch()
    env = {
        "APP_STORAGE": str(storage),
        "DB_DATABASE": str(root / "app.sqlite"),
        "REDIS_PORT": str(redis_server.port),
        "JOBS_LOG": str(root / "jobs.log"),
        "LARAVEL_BASE_PATH": str(APP),
    }
    for kind in ("SERVICES", "PACKAGES", "CONFIG", "ROUTES", "EVENTS"):
        env[f"APP_{kind}_CACHE"] = str(root / "cache" / f"{kind.lower()}.php")
    app = App(env, root / "jobs.log")
    app.artisan("bridge:tables")
    return app


@contextmanager
def _redis() -> Iterator[tuple[sandbox.Sandbox, RedisServer]]:
    """A temp dir and a Redis in it; what joins the sandbox is stopped with it, in reverse."""
    with tempfile.TemporaryDirectory(prefix="asyncphp-bench-laravel-") as tmp:
        box = sandbox.Sandbox(Path(tmp))
        try:
            yield box, box.add(sandbox.start_redis(box.workdir))
        finally:
            box.close()


def _pool_cpu(pool: Pool) -> float:
    """The master's CPU, its reaped children's (pm.max_requests recycles them), its live ones'."""
    fields = Path(f"/proc/{pool.pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    return own + sum(_cpu_or_zero(child) for child in pool.children())


def _cpu_or_zero(pid: int) -> float:
    try:
        return drivers.cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _rss_or_zero(pid: int) -> float:
    try:
        return drivers.rss_mb(pid)
    except (FileNotFoundError, ProcessLookupError, RuntimeError):
        return 0.0


def asyncphp(sizes: Sizes, variant: str = "plain") -> dict[str, float]:
    """The bridge: the daemon and a pm = static pool of ``sizes.workers`` children."""
    with _redis() as (box, redis_server):
        workdir = box.workdir
        app = make_app(workdir / "app", redis_server)
        overrides: dict[str, str | None] = {
            "pm": "static",
            "pm.max_children": str(sizes.workers),
            **{f"env[{name}]": value for name, value in app.env.items()},
        }
        if variant == "no_opcache":
            overrides["php_admin_value[opcache.enable]"] = "0"
        if variant == "cached":
            app.artisan("config:cache")
            app.artisan("event:cache")
        pool = box.add(sandbox.start_pool(workdir / "pool", POOL_CONF, overrides))
        daemon = box.add(
            sandbox.start_daemon(
                redis_server.url, pool.listen, FRONT, "--stream", f"laravel:{QUEUE}",
                "--max-in-flight", str(sizes.workers), "--log-level", "WARNING",
                log=workdir / "daemon.log",
            )
        )  # fmt: skip
        sandbox.subscribed(redis_server.url, f"laravel:{QUEUE}", durable=True)
        before = drivers.cpu_seconds(daemon.pid), _pool_cpu(pool), drivers.cpu_seconds(redis_server.pid)
        app.artisan("bridge:dispatch", "trivial", QUEUE, f"--n={sizes.jobs}")
        seconds = drivers.LineCounter(app.log).wait_for(sizes.jobs, sizes.timeout)
        after = drivers.cpu_seconds(daemon.pid), _pool_cpu(pool), drivers.cpu_seconds(redis_server.pid)
        rss = [_rss_or_zero(child) for child in pool.children()]
    daemon_cpu, pool_cpu, redis_cpu = (b - a for a, b in zip(before, after, strict=True))
    return {
        **_figures(sizes, seconds, pool_cpu, redis_cpu, rss, daemon_cpu),
        "daemon_us_per_job": daemon_cpu / sizes.jobs * 1e6,
    }


def queue_work(sizes: Sizes) -> dict[str, float]:
    """Laravel's own: ``sizes.workers`` processes of ``php artisan queue:work redis``, the same app."""
    php = shutil.which("php") or "php"
    with _redis() as (box, redis_server):
        workdir = box.workdir
        app = make_app(workdir / "app", redis_server)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for index in range(sizes.workers):
                out = (workdir / f"worker-{index}.log").open("wb")
                workers.append(subprocess.Popen(
                    [php, str(APP / "artisan"), "queue:work", "redis", f"--queue={QUEUE}", "--sleep=1",
                     "--tries=1"],
                    env={**os.environ, **app.env}, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip
                out.close()
            client = redis.Redis.from_url(redis_server.url)

            def listening() -> bool:
                if any(worker.poll() is not None for worker in workers):
                    raise RuntimeError(f"a queue:work exited; see {workdir}/worker-*.log")
                return sum(1 for c in client.client_list() if c.get("cmd") == "blpop") >= sizes.workers

            sandbox.wait_until(listening, 60, "the queue:work processes to wait on the queue")
            before = sum(drivers.cpu_seconds(w.pid) for w in workers), drivers.cpu_seconds(redis_server.pid)
            app.artisan("bridge:dispatch", "trivial", QUEUE, f"--n={sizes.jobs}", "--connection=redis")
            seconds = drivers.LineCounter(app.log).wait_for(sizes.jobs, sizes.timeout)
            after = sum(drivers.cpu_seconds(w.pid) for w in workers), drivers.cpu_seconds(redis_server.pid)
            rss = [_rss_or_zero(w.pid) for w in workers]
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(10)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
    php_cpu, redis_cpu = (b - a for a, b in zip(before, after, strict=True))
    return _figures(sizes, seconds, php_cpu, redis_cpu, rss)


def _figures(
    sizes: Sizes, seconds: float, php_cpu: float, redis_cpu: float, rss: list[float], daemon_cpu: float = 0.0
) -> dict[str, float]:
    """One run's figures: CPU per job is the consumers' (PHP, the daemon if any) and redis-server's."""
    return {
        "jobs": float(sizes.jobs),
        "workers": float(sizes.workers),
        "seconds": seconds,
        "rate": sizes.jobs / seconds,
        "php_us_per_job": php_cpu / sizes.jobs * 1e6,
        "redis_us_per_job": redis_cpu / sizes.jobs * 1e6,
        "cpu_us_per_job": (daemon_cpu + php_cpu + redis_cpu) / sizes.jobs * 1e6,
        "rss_mb_total": sum(rss),
        "rss_mb_max": max(rss, default=0.0),
    }
