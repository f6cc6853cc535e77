"""Laravel jobs run as they are, through asyncphp: the real framework Debian packages (8.83), a
minimal app (tests/laravel), a real Redis, php-fpm running the library's front controller
(php/laravel/worker.php), and the daemon. Each test reads what the jobs recorded (JOBS_LOG), the
app's failed_jobs table and Redis."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from asyncphp.dev.sandbox import Pool, RedisServer
from tests.conftest import ROOT
from tests.integration.conftest import Daemon, wait_for

APP = ROOT / "tests" / "laravel"
FRONT = ROOT / "php" / "laravel" / "worker.php"
STREAMS = ("--stream", "laravel:high", "--stream", "laravel:default", "--priority", "strict")


@dataclass
class App:
    env: dict[str, str]
    log: Path
    database: Path
    storage: Path
    php: str
    base: Path = APP

    def artisan(self, *args: str) -> str:
        done = subprocess.run(
            [self.php, str(self.base / "artisan"), *args], env={**os.environ, **self.env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def dispatch(self, what: str, tag: str, n: int = 1) -> float:
        """When it was dispatched (this machine's clock, as the jobs record theirs)."""
        out = self.artisan("bridge:dispatch", what, tag, f"--n={n}")
        return float(json.loads(out.strip().splitlines()[-1])["dispatched"])

    def runs(self, tag: str = "", what: str = "") -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []
        return [
            r
            for r in found
            if (not tag or r.get("tag", "").startswith(tag)) and (not what or r["what"] == what)
        ]

    def failed_jobs(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.database) as db:
            return db.execute("SELECT queue, payload, exception FROM failed_jobs").fetchall()

    def pool_env(self) -> dict[str, str | None]:
        return {f"env[{name}]": value for name, value in self.env.items()}


@pytest.fixture
def app(tmp_path: Path, redis_server: RedisServer, php: str) -> App:
    root = tmp_path / "app"
    storage = root / "storage"
    for sub in ("framework/cache", "framework/views", "framework/sessions", "logs"):
        (storage / sub).mkdir(parents=True)
    caches = root / "cache"
    caches.mkdir()
    database = root / "app.sqlite"
    database.touch()
    env = {
        "APP_STORAGE": str(storage),
        "DB_DATABASE": str(database),
        "REDIS_PORT": str(redis_server.port),
        "JOBS_LOG": str(root / "jobs.log"),
        "LARAVEL_BASE_PATH": str(APP),
    }
    for kind in ("SERVICES", "PACKAGES", "CONFIG", "ROUTES", "EVENTS"):
        env[f"APP_{kind}_CACHE"] = str(caches / f"{kind.lower()}.php")
    made = App(env, root / "jobs.log", database, storage, php)
    made.artisan("bridge:tables")
    return made


@pytest.fixture
def laravel_pool(app: App, start_pool: Callable[..., Pool]) -> Pool:
    return start_pool(app.pool_env())


@pytest.fixture
def run_daemon(laravel_pool: Pool, start_daemon: Callable[..., Daemon]) -> Callable[..., Daemon]:
    def run(*extra: str) -> Daemon:
        return start_daemon(laravel_pool.listen, *STREAMS, *extra, worker=FRONT, wait=False)

    return run


def settled(redis_server: RedisServer, stream: str = "laravel:default") -> Callable[[], bool]:
    client = redis.Redis.from_url(redis_server.url)

    def check() -> bool:
        try:
            info = client.xinfo_groups(stream)
        except redis.ResponseError:
            return False
        return (
            bool(info)
            and info[0]["pending"] == 0
            and info[0]["lag"] == 0
            and client.zcard(f"{stream}:delayed") == 0
        )

    return check


def test_a_job_with_three_tries_failing_twice_runs_three_times_and_ends_done(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    run_daemon()
    app.dispatch("flaky", "f")
    wait_for(lambda: app.runs("f", "done"), what="the third run to succeed")
    assert [r["attempt"] for r in app.runs("f", "run")] == [1, 2, 3]
    wait_for(settled(redis_server), what="its last entry acknowledged")
    assert app.failed_jobs() == [] and app.runs("f", "failed") == []
    assert redis.Redis.from_url(redis_server.url).xlen("laravel:default:dead") == 0


def test_a_job_that_always_fails_is_in_failed_jobs_once_and_queue_retry_runs_it_again_through_asyncphp(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    daemon = run_daemon()
    app.dispatch("always", "a")
    daemon.wait_for(
        "failed for good, recorded by the worker: RuntimeException: attempt 3 of a fails on purpose"
    )
    wait_for(settled(redis_server), what="its entry acknowledged")
    assert [r["attempt"] for r in app.runs("a", "run")] == [1, 2, 3]
    ((queue, payload, exception),) = app.failed_jobs()
    assert queue == "default" and "attempt 3 of a fails on purpose" in exception
    assert json.loads(payload)["displayName"] == "App\\Jobs\\Flaky", "the payload as Laravel made it"
    assert len(app.runs("a", "failed")) == 1, "its failed() ran once"
    assert redis.Redis.from_url(redis_server.url).xlen("laravel:default:dead") == 0, "kept in one place"

    app.artisan("queue:retry", "all")
    assert app.failed_jobs() == []
    wait_for(lambda: len(app.runs("a", "run")) == 6, what="the retried job's three runs")
    assert [r["attempt"] for r in app.runs("a", "run")][3:] == [1, 2, 3], "run again through asyncphp, afresh"
    wait_for(lambda: len(app.failed_jobs()) == 1, what="it to fail again, once")


def test_backoff_and_release_delay_each_rerun_with_the_attempt_counted(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    run_daemon()
    app.dispatch("backoff", "b")
    app.dispatch("release", "r")
    wait_for(lambda: app.runs("b", "done") and app.runs("r", "done"), what="both to end done")
    backoff = app.runs("b", "run")
    assert [r["attempt"] for r in backoff] == [1, 2, 3]
    assert backoff[1]["at"] >= backoff[0]["at"] + 1 and backoff[2]["at"] >= backoff[1]["at"] + 3
    released = app.runs("r", "run")
    assert [r["attempt"] for r in released] == [1, 2]
    assert released[1]["at"] >= released[0]["at"] + 2
    wait_for(settled(redis_server), what="their entries acknowledged")
    assert app.failed_jobs() == []


def test_size_counts_waiting_delayed_and_running_jobs_and_later_takes_a_time_too(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    def sizes(queue: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(app.artisan("bridge:size", queue))
        return found

    first = app.dispatch("high", "s1")
    for tag in ("s2", "s3"):
        app.dispatch("high", tag)
    dispatched = app.dispatch("at", "t")  # a DateTimeInterface: Redis's due time, to the ms
    high = sizes("high")
    assert high == {"size": 3, "pending": 3, "delayed": 0, "reserved": 0, "oldest": high["oldest"]}
    assert int(first) - 1 <= high["oldest"] <= first + 1, "the first job's time, unread before any daemon"
    assert sizes("default") == {"size": 1, "pending": 0, "delayed": 1, "reserved": 0, "oldest": None}
    run_daemon()
    wait_for(lambda: len(app.runs("s", "run")) == 3, what="the three jobs")
    wait_for(settled(redis_server, "laravel:high"), what="their entries acknowledged")
    assert sizes("high") == {"size": 0, "pending": 0, "delayed": 0, "reserved": 0, "oldest": None}
    (run,) = wait_for(lambda: app.runs("t", "run"), what="the job due at a time")  # type: ignore[misc]
    assert run["at"] >= dispatched + 3
    wait_for(lambda: sizes("default")["size"] == 0, what="nothing left")


def test_a_job_past_the_pool_s_request_terminate_timeout_is_killed_and_fails_after_its_tries(
    app: App, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    # Laravel's $timeout needs pcntl, which php-fpm has not: the pool's timeout is what kills.
    pool = start_pool({**app.pool_env(), "request_terminate_timeout": "2s"}, name="timeouts")
    start_daemon(pool.listen, *STREAMS, "--retry-delay", "0.1", worker=FRONT, wait=False)
    app.dispatch("slow", "w")
    wait_for(lambda: app.runs("w", "failed"), timeout=40, what="the job to fail after its two tries")
    assert [r["attempt"] for r in app.runs("w", "run")] == [1, 2], "killed twice, never done"
    assert app.runs("w", "done") == []
    # failed() runs before the JobFailed event whose listener writes the row.
    ((_, _, exception),) = wait_for(app.failed_jobs, what="its failed_jobs row")  # type: ignore[misc]
    assert "MaxAttemptsExceededException" in exception and "too many times" in exception
    wait_for(settled(redis_server), what="its entry acknowledged")


def test_later_waits_and_a_job_past_its_retry_until_fails_without_running(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    run_daemon()
    dispatched = app.dispatch("later", "l")
    app.dispatch("expired", "e")
    (run,) = wait_for(lambda: app.runs("l", "run"), what="the delayed job")  # type: ignore[misc]
    assert run["at"] >= dispatched + 3
    wait_for(lambda: app.runs("e", "failed"), what="the expired job to fail")
    assert app.runs("e", "run") == []
    ((_, _, exception),) = wait_for(app.failed_jobs, what="its failed_jobs row")  # type: ignore[misc]
    assert "MaxAttemptsExceededException" in exception


def test_a_chain_runs_in_order_and_stops_at_a_failure_with_its_catch(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    run_daemon()
    app.dispatch("chain", "c")
    app.dispatch("chain-fails", "x")
    wait_for(lambda: len(app.runs("c-", "run")) == 3, what="the chain's three jobs")
    assert [r["tag"] for r in app.runs("c-", "run")] == ["c-1", "c-2", "c-3"]
    wait_for(lambda: app.runs(what="catch: x-2 fails on purpose"), what="the failing chain's catch")
    wait_for(settled(redis_server), what="every entry acknowledged")
    assert [r["tag"] for r in app.runs("x-", "run")] == ["x-1", "x-2"], "stopped at the failure"
    assert len(app.runs(what="catch: x-2 fails on purpose")) == 1


def test_a_batch_of_100_runs_each_once_then_then_and_finally_once(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    # One job at a time: Laravel's batch bookkeeping (a read then a write in one transaction) fails at
    # once on SQLite when two children write together ("database is locked"); a real app's database
    # serves it concurrently, and queue:work on SQLite fares the same.
    run_daemon("--max-in-flight", "1")
    app.dispatch("batch", "b", n=100)
    wait_for(lambda: app.runs(what="finally"), timeout=120, what="the batch's finally")
    wait_for(settled(redis_server), what="every entry acknowledged")
    tags = sorted(r["tag"] for r in app.runs("b-", "run"))
    assert tags == sorted(f"b-{i}" for i in range(1, 101))
    assert len({r["batch"] for r in app.runs("b-", "run")}) == 1
    assert len(app.runs(what="then")) == 1 and len(app.runs(what="finally")) == 1


def test_should_be_unique_100_dispatches_while_one_waits_give_one_run(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    app.dispatch("unique", "u", n=100)  # before any daemon runs: the first waits in its stream
    run_daemon()
    wait_for(lambda: app.runs("u", "run"), what="the unique job")
    wait_for(settled(redis_server), what="its entry acknowledged")
    assert len(app.runs("u", "run")) == 1
    app.dispatch("unique", "u")  # its lock released once it ran
    wait_for(lambda: len(app.runs("u", "run")) == 2, what="the next one, after the lock was released")


def test_on_queue_lands_on_that_queue_s_stream_read_first(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    app.dispatch("high", "h")
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen("laravel:high") == 1 and not client.exists("laravel:default")
    run_daemon()
    (run,) = wait_for(lambda: app.runs("h", "run"), what="the high queue's job")  # type: ignore[misc]
    assert run["queue"] == "high"


def test_while_the_app_is_down_a_job_waits_without_spending_an_attempt(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    down = app.storage / "framework" / "down"
    down.write_text("{}")
    daemon = run_daemon()
    app.dispatch("flaky", "m")
    daemon.wait_for(r"asked to run it again in 1 s \(it did not run it\)", count=2)
    assert app.runs("m") == []
    down.unlink()
    wait_for(lambda: app.runs("m", "done"), what="the job, once the app is up")
    assert [r["attempt"] for r in app.runs("m", "run")] == [1, 2, 3], "no attempt spent while down"


def test_an_app_that_cannot_boot_fails_each_job_with_its_error_kept_as_a_dead_letter(
    app: App, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    broken = start_pool({**app.pool_env(), "env[BROKEN_CONFIG]": "1"}, name="broken")
    budget = ("--max-attempts", "2", "--retry-delay", "0.1")
    daemon = start_daemon(broken.listen, *STREAMS, *budget, worker=FRONT, wait=False)
    app.dispatch("flaky", "x")
    daemon.wait_for("dead-lettered to laravel:default:dead after 2 attempt")
    ((_, letter),) = redis.Redis.from_url(redis_server.url).xrange("laravel:default:dead")
    assert b"could not boot: RuntimeException: config/app.php is broken on purpose" in letter[b"stderr"]
    assert letter[b"status"] == b"500"
    assert daemon.lines("status 500 .*could not boot: RuntimeException: config/app.php is broken on purpose")
    assert app.runs("x") == []


def test_a_job_s_answer_arrives_past_php_fpm_s_output_buffer(
    app: App, run_daemon: Callable[..., Daemon], redis_server: RedisServer
) -> None:
    # 16 KB printed, then release(1): headers go out with the first 4 KB unless the front
    # controller holds the output, and the ask (Asyncphp-Retry-In) would be lost with them.
    run_daemon()
    app.dispatch("loud", "l")
    wait_for(lambda: len(app.runs("l", "run")) == 2, what="the release's rerun")
    assert [r["attempt"] for r in app.runs("l", "run")] == [1, 2]
    wait_for(settled(redis_server), what="its entries acknowledged")


def test_an_app_that_installs_the_library_with_composer_runs_jobs_through_it(
    app: App, tmp_path: Path, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # As docs/laravel.md says: a path repository (Composer symlinks it), package discovery
    # registering the driver, and the pool pointed at vendor/asyncphp/client/laravel/worker.php
    # with no LARAVEL_BASE_PATH: the front controller finds its app from that path.
    base = tmp_path / "installed"
    shutil.copytree(APP, base)
    bootstrap = base / "bootstrap" / "app.php"
    bootstrap.write_text(
        bootstrap.read_text().replace(
            "require_once dirname(__DIR__, 3) . '/php/autoload.php';",
            "require_once dirname(__DIR__) . '/vendor/autoload.php';",
        )
    )
    config = base / "config" / "app.php"
    config.write_text(config.read_text().replace("Asyncphp\\Laravel\\AsyncphpServiceProvider::class,", ""))
    assert "AsyncphpServiceProvider" not in config.read_text()
    (base / "composer.json").write_text(
        json.dumps({
            "name": "example/app",
            "repositories": [{"type": "path", "url": str(ROOT / "php")}],
            "require": {"asyncphp/client": "*@dev"},
        })
    )  # fmt: skip
    env = {**os.environ, "COMPOSER_HOME": str(tmp_path / "composer-home"), "COMPOSER_NO_INTERACTION": "1"}
    done = subprocess.run(
        ["composer", "install", "--no-progress"], cwd=base, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    library = base / "vendor" / "asyncphp" / "client"
    assert library.is_symlink(), "Composer's default for a path repository"
    # Caches of its own: the fixture's app, without Composer, has made a manifest with no packages.
    caches = {
        f"APP_{kind}_CACHE": str(tmp_path / f"installed-{kind.lower()}.php")
        for kind in ("SERVICES", "PACKAGES")
    }
    installed = App({**app.env, **caches}, app.log, app.database, app.storage, app.php, base)
    pool = start_pool({f"env[{k}]": v for k, v in installed.env.items() if k != "LARAVEL_BASE_PATH"})
    start_daemon(pool.listen, *STREAMS, worker=library / "laravel" / "worker.php", wait=False)
    installed.dispatch("high", "c")
    wait_for(lambda: installed.runs("c", "run"), what="the job, through the installed library")
