"""Symfony Messenger messages handled by asyncphp in php-fpm: the Symfony Debian packages (5.4), a
minimal kernel (tests/symfony) with asyncphp:// transports, a real Redis, php-fpm running the
library's front controller (php/symfony/worker.php), and the daemon. Each test reads what the
handlers recorded (JOBS_LOG) and Redis."""

from __future__ import annotations

import json
import os
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

APP = ROOT / "tests" / "symfony"
FRONT = ROOT / "php" / "symfony" / "worker.php"
STREAM = "symfony:async"


@dataclass
class App:
    env: dict[str, str]
    log: Path
    php: str

    def console(self, *args: str) -> str:
        done = subprocess.run(
            [self.php, str(APP / "bin" / "console"), *args], env={**os.environ, **self.env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr  # Messenger's commands write to stderr

    def dispatch(self, tag: str, behave: str = "", failures: int = 0, delay_ms: int = 0) -> float:
        """When it was dispatched (this machine's clock, as the handlers record theirs)."""
        out = self.console("bridge:dispatch", tag, behave, str(failures), str(delay_ms))
        return float(json.loads(out.strip().splitlines()[-1])["dispatched"])

    def runs(self, tag: str, what: str = "run") -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []
        return [r for r in found if r["tag"] == tag and r["what"] == what]


@pytest.fixture
def app(tmp_path: Path, redis_server: RedisServer, php: str) -> App:
    env = {
        "APP_VAR": str(tmp_path / "var"),
        "REDIS_PORT": str(redis_server.port),
        "JOBS_LOG": str(tmp_path / "jobs.log"),
        "SYMFONY_BASE_PATH": str(APP),
        "APP_ENV": "test",
        "APP_DEBUG": "0",
    }
    made = App(env, tmp_path / "jobs.log", php)
    made.console("cache:warmup")  # the container the pool's requests boot from
    return made


@pytest.fixture
def run_daemon(app: App, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]) -> Daemon:
    pool = start_pool({f"env[{name}]": value for name, value in app.env.items()})
    return start_daemon(pool.listen, "--stream", STREAM, "--retry-delay", "0.2", worker=FRONT, wait=False)


def failed_bodies(redis_server: RedisServer) -> list[bytes]:
    with redis.Redis.from_url(redis_server.url) as client:
        return [
            json.loads(fields[b"payload"])["symfony"].encode()
            for _, fields in client.xrange("symfony:failed")
        ]


def test_a_message_is_handled_once_by_each_of_its_handlers(app: App, run_daemon: Daemon) -> None:
    app.dispatch("once")
    wait_for(lambda: app.runs("once") and app.runs("once", "second"), what="both handlers")
    run_daemon.wait_for("acknowledged|status 200", count=1)
    assert len(app.runs("once")) == 1 and len(app.runs("once", "second")) == 1


def test_a_handler_failing_twice_then_succeeding_follows_the_transport_s_retry_strategy(
    app: App, run_daemon: Daemon, redis_server: RedisServer
) -> None:
    # max_retries 2, delay 1000 ms, multiplier 2: Messenger's own listener re-sends a copy with a
    # DelayStamp, through the transport, as an asyncphp delayed job.
    app.dispatch("flaky", "flaky", failures=2)
    wait_for(lambda: len(app.runs("flaky")) == 3, timeout=30, what="the third run")
    first, second, third = (r["at"] for r in app.runs("flaky"))
    assert second - first >= 1.0 and third - second >= 2.0, "no earlier than the strategy's delays"
    assert failed_bodies(redis_server) == []


def test_one_that_always_fails_ends_in_the_failure_transport_once_with_its_error(
    app: App, run_daemon: Daemon, redis_server: RedisServer
) -> None:
    app.dispatch("always", "always")
    wait_for(lambda: failed_bodies(redis_server), timeout=30, what="the failure transport's entry")
    assert len(app.runs("always")) == 3, "the first run and two retries"
    (body,) = failed_bodies(redis_server)
    assert b"always fails" in body, "its error, in Messenger's ErrorDetailsStamp"
    # The daemon counts it failed, recorded by the worker (the failure transport), no dead letter.
    run_daemon.wait_for("failed for good, recorded by the worker: RuntimeException: always fails")
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.xlen(f"{STREAM}:dead") == 0


def test_an_unrecoverable_exception_skips_the_retries(
    app: App, run_daemon: Daemon, redis_server: RedisServer
) -> None:
    app.dispatch("unrecoverable", "unrecoverable")
    wait_for(lambda: failed_bodies(redis_server), timeout=30, what="the failure transport's entry")
    assert len(app.runs("unrecoverable")) == 1


def test_a_delay_stamp_is_an_asyncphp_delayed_job(app: App, run_daemon: Daemon) -> None:
    dispatched = app.dispatch("later", delay_ms=3000)
    (run,) = wait_for(lambda: app.runs("later"), what="the delayed message")  # type: ignore[misc]
    assert run["at"] >= dispatched + 3


def test_a_body_whose_class_is_gone_is_a_dead_letter_and_the_next_message_runs(
    app: App, run_daemon: Daemon, redis_server: RedisServer
) -> None:
    app.dispatch("template")
    wait_for(lambda: app.runs("template"), what="the first message")
    with redis.Redis.from_url(redis_server.url) as client:
        ((_, fields),) = client.xrange(STREAM)
        message = json.loads(fields[b"payload"])
        encoded = json.loads(message["symfony"])
        # PhpSerializer's body: the serialized envelope, its backslashes doubled (addslashes).
        body = encoded["body"].replace(r"App\\Message\\Note", r"App\\Message\\Gone")
        assert body != encoded["body"]
        message["symfony"] = json.dumps({**encoded, "body": body})
        client.xadd(STREAM, {b"payload": json.dumps(message)})
        app.dispatch("next")
        wait_for(lambda: app.runs("next"), what="the message after it")
        wait_for(lambda: client.xlen(f"{STREAM}:dead") == 1, what="the dead letter")
        ((_, letter),) = client.xrange(f"{STREAM}:dead")
    assert b"cannot be decoded" in letter[b"reason"] and b"App\\Message\\Gone" in letter[b"reason"]


def test_messenger_failed_show_and_retry_work_on_the_asyncphp_failure_transport(
    app: App, run_daemon: Daemon, redis_server: RedisServer
) -> None:
    # Three failures (the run and its two retries), then in the failure transport, whose stream no
    # daemon reads; messenger:failed:retry handles it in the command, as Messenger does for every
    # transport, and the fourth run succeeds: the entry leaves the stream.
    app.dispatch("fixed", "flaky", failures=3)
    wait_for(lambda: failed_bodies(redis_server), timeout=30, what="the failure transport's entry")
    shown = app.console("messenger:failed:show")
    assert "App\\Message\\Note" in shown
    (entry_id,) = (line.split()[0] for line in shown.splitlines() if "App\\Message\\Note" in line)
    assert "flaky failure 3" in app.console("messenger:failed:show", entry_id, "-vv"), "its error"
    app.console("messenger:failed:retry", "--force")
    assert len(app.runs("fixed")) == 4
    assert failed_bodies(redis_server) == [], "handled: gone from the failure transport"
