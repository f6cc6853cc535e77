"""Every job's outcome is read and logged, whatever the worker does; the daemon keeps going."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable
from typing import Any

import redis

from asyncphp.caller import enqueue, publish
from asyncphp.dev.sandbox import Pool, RedisServer
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for

BEHAVE = PHP_DIR / "behave.php"


def test_large_output_is_read_to_the_end_and_a_fatal_error_is_logged(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, worker=BEHAVE)
    url = redis_server.url

    assert publish({"do": "output", "bytes": 100 * 1024}, redis_url=url) == 1
    (line,) = daemon.wait_for(r"job 1 on commands: status 200")
    # The worker wrote its line after the output: it was not aborted by a closed connection.
    wait_for(lambda: "output done 102400" in lines(pool.worker_log), what="the worker to finish its output")

    assert publish({"do": "fatal"}, redis_url=url) == 1
    (line,) = daemon.wait_for(r"job 2 on commands: status 500")
    assert "ERROR" in line
    assert "Call to undefined function undefined_function_for_asyncphp_tests()" in line
    assert "PHP Fatal error" in line

    assert publish({"do": "status", "code": 422}, redis_url=url) == 1
    (line,) = daemon.wait_for(r"job 3 on commands: status 422")
    assert "ERROR" in line and "answered 422" in line

    assert publish({"do": "note", "text": "still alive"}, redis_url=url) == 1
    wait_for(lambda: "still alive" in lines(pool.worker_log), what="the next job after the failures")
    daemon.wait_for(r"job 4 on commands: status 200")
    assert daemon.server.process.poll() is None


def test_worker_sees_post_and_server_as_php_would(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon], php: str
) -> None:
    daemon = start_daemon(pool.listen, worker=BEHAVE)
    message = {
        "do": "dump",
        "user": {"name": "Zoë O'Brien", "tags": ["a b", "c&d", None, True, False], "empty": []},
        "amount": 12.5,
        "big": "y" * 200_000,  # the body spans several STDIN records
    }
    assert publish(message, redis_url=redis_server.url) == 1
    daemon.wait_for(r"job 1 on commands: status 200")
    seen = json.loads(wait_for(lambda: lines(pool.worker_log), what="the dump")[0])  # type: ignore[index]

    expected_post = subprocess.run(
        [
            php,
            "-r",
            "parse_str(http_build_query(json_decode(stream_get_contents(STDIN), true)), $p);"
            "echo json_encode($p);",
        ],
        input=json.dumps(message).encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert seen["post"] == json.loads(expected_post)
    server = seen["server"]
    assert server["REQUEST_METHOD"] == "POST"
    assert server["SCRIPT_FILENAME"] == str(BEHAVE)
    assert server["REQUEST_URI"] == server["SCRIPT_NAME"] == "/behave.php"
    assert server["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert int(server["CONTENT_LENGTH"]) > 200_000
    assert server["SERVER_SOFTWARE"].startswith("asyncphp/")
    assert (server["ASYNCPHP_REQUEST_ID"], server["ASYNCPHP_CHANNEL"]) == ("1", "commands")


def asked_runs(pool: Pool, job: str) -> list[dict[str, Any]]:
    runs = [json.loads(line) for line in lines(pool.worker_log) if line.startswith("{")]
    return [run for run in runs if run.get("id") == job]


def test_a_worker_asks_to_run_again_later_and_its_stream_entry_carries_its_attempts_and_lineage(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # max_attempts 2 bounds the daemon's own retries, not the worker's asks: three asks, then done.
    daemon = start_daemon(pool.listen, "--stream", "jobs", "--max-attempts", "2", worker=BEHAVE, wait=False)
    client = redis.Redis.from_url(redis_server.url)
    first = enqueue(
        {"do": "ask", "id": "a", "until": 4, "in": 0.5}, stream="jobs", redis_url=redis_server.url
    ).id
    runs = wait_for(lambda: len(asked_runs(pool, "a")) == 4 and asked_runs(pool, "a"), what="four runs")
    assert isinstance(runs, list)
    assert [run["attempt"] for run in runs] == [1, 2, 3, 4], "the attempt count carried"
    assert runs[0]["entry"] == first and runs[0]["first"] == ""
    assert all(run["first"] == first for run in runs[1:]), (
        "each new entry names the entry its lineage began with"
    )
    assert len({run["entry"] for run in runs}) == 4
    for earlier, later in itertools.pairwise(runs):
        # Each rerun is due no earlier than asked from the answer before it (due_at is Redis's clock).
        assert float(later["due"]) >= earlier["at"] + 0.5 - 0.05
    daemon.wait_for(r"acknowledged and delayed as d\d+, due in 0.5 s, after attempt 3", count=1)
    wait_for(lambda: client.xpending("jobs", "asyncphp")["pending"] == 0, what="the last run acknowledged")
    assert client.xlen("jobs:dead") == 0 and client.zcard("jobs:delayed") == 0
    assert client.hlen("jobs:delayed:lineage") == 0, "moved with its job"


def test_a_worker_asks_for_a_dead_letter_or_says_it_recorded_the_failure_itself(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=BEHAVE, wait=False)
    client = redis.Redis.from_url(redis_server.url)
    url = redis_server.url
    dead = {"do": "ask", "id": "d", "until": 2, "in": 0, "then": "Asyncphp-Dead-Letter: no user 42"}
    enqueue(dead, stream="jobs", redis_url=url)
    daemon.wait_for("dead-lettered to jobs:dead after 2 attempt", count=1)
    ((_, letter),) = client.xrange("jobs:dead")
    assert letter[b"reason"] == b"the worker asked for a dead letter: no user 42"
    assert letter[b"attempts"] == b"2" and letter[b"first_id"] != b""
    recorded = {"do": "ask", "id": "f", "until": 1, "then": "Asyncphp-Failed: kept in failed_jobs"}
    enqueue(recorded, stream="jobs", redis_url=url)
    (line,) = daemon.wait_for("failed for good, recorded by the worker: kept in failed_jobs")
    assert "status 500" in line
    wait_for(lambda: client.xpending("jobs", "asyncphp")["pending"] == 0, what="acknowledged")
    assert client.xlen("jobs:dead") == 1, "recorded by the worker: not a dead letter too"
    assert daemon.lines("attempt 1 of 5 failed") == [], "nor retried"
    assert len(asked_runs(pool, "f")) == 1
