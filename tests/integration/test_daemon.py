"""The daemon process: settings errors, start-up, bad input, TCP pools, sd_notify."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from asyncphp.caller import publish
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, free_port
from tests.conftest import WORKER
from tests.integration.conftest import Daemon, lines, notifications, wait_for


def run_daemon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncphp.loop.daemon", *args], capture_output=True, text=True, timeout=30
    )


def test_invalid_setting_exits_2_with_one_line() -> None:
    done = run_daemon("--fpm-socket", "not/absolute.sock")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "invalid setting fpm_socket (from --fpm-socket)" in done.stderr


def test_redis_down_at_start_is_retried_until_it_comes(
    tmp_path: Path, pool: Pool, notify_socket: socket.socket
) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    env = {"NOTIFY_SOCKET": notify_socket.getsockname()}
    daemon = Daemon(
        sandbox.start_daemon(f"redis://127.0.0.1:{port}/0", pool.listen, WORKER, log=log, env=env), log
    )
    try:
        daemon.wait_for(
            rf"ERROR cannot connect to redis at redis://127\.0\.0\.1:{port}/0: .* retrying in", count=2
        )
        (redis_dir := tmp_path / "redis").mkdir()
        server = sandbox.start_redis(redis_dir, port=port)
        try:
            daemon.wait_for("Subscribed to commands", timeout=15)
            notifications(notify_socket, until="READY=1")
            assert publish({"timestamp": "late redis"}, redis_url=server.url) == 1
            daemon.wait_for("job 1 on commands: status 200")
        finally:
            assert daemon.stop() == 0
            server.stop()
    finally:
        daemon.stop()


def test_bad_messages_are_skipped_and_the_next_one_runs(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    import redis

    daemon = start_daemon(pool.listen)
    client = redis.Redis.from_url(redis_server.url)
    deep = b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"  # deeper than Python's recursion limit
    for bad in (b"not json", b"[1,2]", b"\xff\xfe", deep):
        assert client.publish("commands", bad) == 1
    assert publish({"timestamp": "after the bad ones"}, redis_url=redis_server.url) == 1
    wait_for(lambda: "after the bad ones" in lines(pool.worker_log), what="the good message")
    warnings = daemon.wait_for("WARNING skipped a message on commands", count=4)
    assert "not JSON" in warnings[0] and '"not json"' in warnings[0]
    assert "not an object" in warnings[1]
    assert "not UTF-8" in warnings[2] and "\\xff" in warnings[2]
    assert "nested deeper than json_decode() accepts" in warnings[3] and "(6007 bytes)" in warnings[3]
    assert daemon.server.process.poll() is None


def test_pool_over_tcp(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    port = free_port()
    pool = start_pool({"listen": f"127.0.0.1:{port}"})
    daemon = start_daemon(f"127.0.0.1:{port}")
    assert publish({"timestamp": "over tcp"}, redis_url=redis_server.url) == 1
    daemon.wait_for("job 1 on commands: status 200")
    assert lines(pool.worker_log) == ["over tcp"]


def test_pool_not_listening_is_logged_with_the_message(
    redis_server: RedisServer, tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(tmp_path / "nobody.sock", "--retry-for", "1")
    assert publish({"timestamp": "lost?"}, redis_url=redis_server.url) == 1
    (line,) = daemon.wait_for("ERROR job 1 on commands given up: the pool could not take it for")
    assert "No such file or directory" in line and "lost?" in line
    retries = daemon.lines("WARNING job 1 on commands: cannot connect")
    assert len(retries) >= 3 and "retrying in" in retries[0]


def test_ready_only_after_subscribing_and_stopping_on_sigterm(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon], notify_socket: socket.socket
) -> None:
    daemon = start_daemon(pool.listen, env={"NOTIFY_SOCKET": notify_socket.getsockname()}, wait=False)
    ready = notifications(notify_socket, until="READY=1")[-1]
    assert "STATUS=subscribed to commands · 0 dispatched" in ready
    daemon.wait_for("Subscribed to commands")  # the turn's lines are written at its end, after READY
    assert publish({"timestamp": "x"}, redis_url=redis_server.url) == 1

    assert daemon.stop() == 0
    notifications(notify_socket, until="STOPPING=1")


def test_fire_and_forget_hands_every_job_over_before_any_finishes(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    import redis

    daemon = start_daemon(pool.listen, "--max-in-flight", "10", "--log-level", "DEBUG")
    with redis.Redis.from_url(redis_server.url).pipeline(transaction=False) as pipe:
        for i in range(10):
            pipe.publish("commands", f'{{"timestamp": "job {i}"}}')
        pipe.execute()
    daemon.wait_for(r"job \d+ on commands: status 200", count=10)
    events = daemon.lines(r"Spawned process with ID|status 200")
    # The worker sleeps 1 s: a dispatcher that waited for each job could not hand all ten over
    # before the first one finished.
    assert all("Spawned" in line for line in events[:10]), events


def test_several_channels_and_where_it_connected(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--channel", "alpha", "--channel", "beta")
    # Lines are written once per turn of the loop: Redis may see the subscription first.
    daemon.wait_for(rf"INFO Connected to redis on 127\.0\.0\.1:{redis_server.port} \(redis \d")
    daemon.wait_for("INFO Subscribed to alpha, beta")
    assert publish({"timestamp": "a"}, channel="alpha", redis_url=redis_server.url) == 1
    assert publish({"timestamp": "b"}, channel="beta", redis_url=redis_server.url) == 1
    assert publish({"timestamp": "c"}, channel="commands", redis_url=redis_server.url) == 0
    daemon.wait_for("job 1 on alpha: status 200")
    daemon.wait_for("job 2 on beta: status 200")
