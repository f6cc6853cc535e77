"""Every job's outcome is read and logged, whatever the worker does; the daemon keeps going."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from asyncphp.caller import publish
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
