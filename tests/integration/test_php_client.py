"""The PHP client (php/): its own PHPUnit suite on a real Redis, the same bytes in Redis as the
Python caller for the same calls, and its jobs run by the real daemon like Python's."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from asyncphp.caller import enqueue, publish
from asyncphp.dev.sandbox import Pool, RedisServer
from tests.conftest import PHP_DIR, ROOT
from tests.integration.conftest import Daemon, lines, wait_for

LIBRARY = ROOT / "php"
CALLS = PHP_DIR / "client_calls.php"
POST_WORKER = PHP_DIR / "post.php"
# Unicode, "/", a line separator, a list, a nested object, a float, null and a bool: what the two
# JSON encoders must agree on.
PAYLOAD: dict[str, Any] = {
    "user": 42, "name": "é/✓\u2028", "tags": ["a", "b"], "nested": {"x": 1.5, "y": None, "z": True},
}  # fmt: skip
AT = datetime(2031, 1, 1, 10, 0, 0, 123457, tzinfo=timezone(timedelta(hours=1)))
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# The same calls, made from Python and described for tests/php/client_calls.php.
SAME_CALLS: list[tuple[Callable[[str], object], dict[str, Any]]] = [
    (
        lambda url: publish(PAYLOAD, channel="commands", redis_url=url),
        {"op": "publish", "channel": "commands"},
    ),
    (
        lambda url: enqueue(PAYLOAD, stream="mail", redis_url=url),
        {"op": "stream", "stream": "mail"},
    ),
    (
        lambda url: enqueue(PAYLOAD, stream="mail", redis_url=url, delay=30),
        {"op": "stream", "stream": "mail", "delay": 30},
    ),
    (
        lambda url: enqueue(PAYLOAD, stream="mail", redis_url=url, at=AT),
        {"op": "stream", "stream": "mail", "at": AT.isoformat()},
    ),
    (
        lambda url: enqueue(PAYLOAD, stream="mail", redis_url=url, unique_key="welcome:42", unique_for=600),
        {"op": "stream", "stream": "mail", "unique": ["welcome:42", 600]},
    ),
    (
        lambda url: enqueue(
            PAYLOAD,
            stream="mail",
            redis_url=url,
            delay=1.5,
            unique_key="r",
            unique_for=60,
            unique_until="expiry",
        ),
        {"op": "stream", "stream": "mail", "delay": 1.5, "unique": ["r", 60, "expiry"]},
    ),
    (
        lambda url: publish(PAYLOAD, channel="commands", redis_url=url, release="r1", traceparent=TRACE),
        {"op": "publish", "channel": "commands", "release": "r1", "trace": [TRACE, ""]},
    ),
    (
        lambda url: enqueue(
            PAYLOAD, stream="mail", redis_url=url, delay=5, release="r2", traceparent=TRACE, tracestate="v=1"
        ),
        {"op": "stream", "stream": "mail", "delay": 5, "release": "r2", "trace": [TRACE, "v=1"]},
    ),
]


def php_calls(kind: str, port: int, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["php", str(CALLS), kind, f"127.0.0.1:{port}", json.dumps(calls)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@contextmanager
def monitor(port: int, out: Path) -> Iterator[list[str]]:
    """Every command Redis runs meanwhile, as MONITOR prints it, without the client's address and
    without what scripts run inside (their times differ from run to run)."""
    commands: list[str] = []
    with out.open("w") as sink:
        process = subprocess.Popen(["redis-cli", "-p", str(port), "monitor"], stdout=sink)
    try:
        wait_for(lambda: out.read_text().startswith("OK"), what="MONITOR to start")
        yield commands
        client = redis.Redis(host="127.0.0.1", port=port)  # a fresh root has no /etc/hosts: no "localhost"
        client.echo("asyncphp-test-end")  # MONITOR prints it: everything before has been printed
        client.close()
        wait_for(lambda: "asyncphp-test-end" in out.read_text(), what="MONITOR to catch up")
    finally:
        process.terminate()
        process.wait(10)
    for line in out.read_text().splitlines()[1:]:
        source, _, command = line.partition("] ")
        if " lua" in source or not command:
            continue
        name = command.split(" ", 1)[0].strip('"').upper()
        if name in ("CLIENT", "HELLO", "SELECT", "PING", "AUTH", "ECHO", "INFO"):
            continue  # the connection's handshake, which differs by client
        commands.append(command)


def test_the_phpunit_suite(redis_server: RedisServer) -> None:
    done = subprocess.run(
        ["phpunit", "--configuration", str(LIBRARY / "phpunit.xml.dist")],
        cwd=LIBRARY, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ASYNCPHP_TEST_REDIS": f"127.0.0.1:{redis_server.port}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^OK \(\d+ tests", done.stdout, re.MULTILINE), done.stdout
    print("\n" + done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["phpredis", "predis"])
def test_php_and_python_write_the_same_bytes_to_redis(
    tmp_path: Path, redis_server: RedisServer, kind: str
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seen: dict[str, list[str]] = {}
    for who in ("python", kind):
        client.flushall()
        client.script_flush()  # both go through NOSCRIPT, then SCRIPT LOAD
        with monitor(redis_server.port, tmp_path / f"{who}.monitor") as commands:
            if who == "python":
                for call, _ in SAME_CALLS:
                    call(redis_server.url)
            else:
                results = php_calls(
                    kind, redis_server.port, [{**c, "payload": PAYLOAD} for _, c in SAME_CALLS]
                )
                assert all("result" in r for r in results), results
        seen[who] = commands
    client.close()
    assert seen["python"] == seen[kind]
    assert len(seen["python"]) == len(SAME_CALLS) + 2, seen["python"]  # NOSCRIPT once: SCRIPT LOAD, EVALSHA
    assert any(c.startswith('"SCRIPT" "LOAD"') for c in seen["python"])


def test_jobs_from_the_php_client_run_like_jobs_from_python(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    start_daemon(pool.listen, "--channel", "commands", "--stream", "mail", worker=POST_WORKER)
    url, port = redis_server.url, redis_server.port

    def calls(tag: str) -> list[dict[str, Any]]:
        payload = {**PAYLOAD, "from": tag}
        return [
            {"op": "publish", "payload": payload},
            {"op": "stream", "stream": "mail", "payload": payload},
            {"op": "stream", "stream": "mail", "delay": 0.2, "payload": payload},
            # Held until expiry: held until processed, the first may run before the second comes.
            {"op": "stream", "stream": "mail", "unique": [f"u:{tag}", 600, "expiry"], "payload": payload},
            {"op": "stream", "stream": "mail", "unique": [f"u:{tag}", 600, "expiry"], "payload": payload},
        ]

    results = php_calls("phpredis", port, calls("php"))
    assert results[0] == {"result": 1}, "one daemon subscribed"
    first, again = results[3]["result"], results[4]["result"]
    assert first["added"] and not again["added"] and again["id"] == first["id"]
    assert results[2]["result"]["id"].startswith("d")
    python = {**PAYLOAD, "from": "python"}
    publish(python, redis_url=url)
    enqueue(python, stream="mail", redis_url=url)
    enqueue(python, stream="mail", redis_url=url, delay=0.2)
    for _ in range(2):
        enqueue(
            python, stream="mail", redis_url=url, unique_key="u:python", unique_for=600, unique_until="expiry"
        )

    def runs() -> list[dict[str, Any]]:
        return [json.loads(line) for line in lines(pool.worker_log)]

    wait_for(lambda: len(runs()) >= 8, what="four jobs from each client")
    with redis.Redis.from_url(url) as client:
        assert client.xlen("mail") == 6, "the second unique job of each was not added"
    done = runs()
    assert len(done) == 8
    by_client: dict[str, list[dict[str, Any]]] = {"php": [], "python": []}
    for run in done:
        post = run["post"]
        by_client[post.pop("from")].append(
            {"channel": run["channel"], "post": post, "delayed": bool(run["due_at"])}
        )
    key = lambda run: (run["channel"], run["delayed"])  # noqa: E731
    assert sorted(by_client["php"], key=key) == sorted(by_client["python"], key=key)
    assert by_client["php"][0]["post"]["name"] == "é/✓\u2028"


def test_an_app_installs_the_client_with_composer_from_a_path_repository(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "composer.json").write_text(
        json.dumps({
            "name": "example/app",
            "repositories": [{"type": "path", "url": str(LIBRARY), "options": {"symlink": False}}],
            "require": {"asyncphp/client": "*@dev"},
        })
    )  # fmt: skip
    env = {**os.environ, "COMPOSER_HOME": str(tmp_path / "composer-home"), "COMPOSER_NO_INTERACTION": "1"}
    done = subprocess.run(
        ["composer", "install", "--no-progress"],
        cwd=app, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    script = (
        "require 'vendor/autoload.php'; $r = new Redis(); $r->connect('127.0.0.1', (int) $argv[1]);"
        "echo (new Asyncphp\\Client($r))->stream('mail')->publish(['via' => 'composer']);"
    )
    ran = subprocess.run(
        ["php", "-r", script, str(redis_server.port)], cwd=app, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.xrange("mail") == [(ran.stdout.encode(), {b"payload": b'{"via":"composer"}'})]
