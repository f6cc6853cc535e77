"""Faults on real processes: bursts, Redis and pool restarts, bad input, signals, sd_notify."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from asyncphp import sandbox
from asyncphp.caller import publish
from asyncphp.sandbox import Pool, RedisServer
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for

FAST = PHP_DIR / "fast.php"


def publish_many(url: str, payloads: list[bytes | str], channel: str = "commands") -> list[int]:
    with redis.Redis.from_url(url).pipeline(transaction=False) as pipe:
        for payload in payloads:
            pipe.publish(channel, payload)
        return [int(n) for n in pipe.execute()]


def numbered(count: int, start: int = 0) -> list[str]:
    return [json.dumps({"n": i}) for i in range(start, start + count)]


@pytest.mark.parametrize("backlog", [511, 16])
def test_burst_of_10000_into_a_pool_of_5_loses_nothing(
    backlog: int,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    pool = start_pool({"listen.backlog": str(backlog)})
    daemon = start_daemon(pool.listen, "--log-level", "WARNING", worker=FAST)
    started = time.monotonic()
    assert publish_many(redis_server.url, numbered(10_000)) == [1] * 10_000
    wait_for(lambda: len(lines(pool.worker_log)) >= 10_000, timeout=120, what="10,000 worker lines")
    elapsed = time.monotonic() - started
    seen = lines(pool.worker_log)
    assert len(seen) == 10_000 and set(seen) == {str(i) for i in range(10_000)}
    assert daemon.lines("ERROR") == []
    print(f"\nburst: 10,000 jobs, listen.backlog {backlog}: {elapsed:.2f} s ({10_000 / elapsed:,.0f} jobs/s)")


def test_redis_restart_mid_stream(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, worker=FAST)
    assert publish_many(redis_server.url, numbered(100)) == [1] * 100
    wait_for(lambda: len(lines(pool.worker_log)) == 100, what="the first 100 jobs")

    redis_server.stop()
    stopped = time.monotonic()
    daemon.wait_for("ERROR lost the connection to redis")
    daemon.wait_for(r"ERROR cannot connect to redis at .* retrying in")
    (tmp_path / "redis-again").mkdir()
    again = sandbox.start_redis(tmp_path / "redis-again", port=redis_server.port)
    try:
        (line,) = daemon.wait_for(
            r"WARNING Resubscribed to commands after a [\d.]+ s redis outage", timeout=15
        )
        recovered = time.monotonic() - stopped
        assert publish_many(again.url, numbered(100, start=100)) == [1] * 100
        wait_for(lambda: len(lines(pool.worker_log)) == 200, what="the jobs after the restart")
        assert sorted(map(int, lines(pool.worker_log))) == list(range(200))
        assert daemon.server.process.poll() is None
        said = line.split("WARNING ")[1]
        print(f"\nredis restart: back {recovered:.2f} s after redis stopped; daemon says: {said}")
    finally:
        daemon.stop()
        again.stop()


def test_pool_down_then_back_within_5_s(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool()
    daemon = start_daemon(pool.listen, worker=FAST)
    pool.stop()
    assert publish_many(redis_server.url, numbered(50)) == [1] * 50
    daemon.wait_for("WARNING job 1 on commands: cannot connect")
    time.sleep(2)
    back = start_pool()  # same directory, same socket path
    assert back.listen == pool.listen
    wait_for(
        lambda: len(lines(back.worker_log)) == 50, timeout=30, what="all 50 jobs after the pool came back"
    )
    assert sorted(map(int, lines(back.worker_log))) == list(range(50))
    assert daemon.lines("given up") == []


BAD_INPUT = [
    (b"not json", "not JSON"),
    (b'{"n": 1', "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "JSON list, not an object"),
    (b'"a string"', "JSON str, not an object"),
    (b"42", "JSON int, not an object"),
    (b"null", "JSON NoneType, not an object"),
    (b'{"n": NaN}', "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'\xef\xbb\xbf{"n": 1}', "not JSON"),  # a byte order mark: json_decode() refuses it too
    (b'{"s": "\\ud800"}', "unpaired UTF-16 surrogate"),
    (b'{"big": "' + b"x" * 2_000_000 + b'"}', "over max_message_bytes (1048576)"),
    (b'{"a": ' + b'{"b": ' * 70 + b"1" + b"}" * 70 + b"}", "over max_input_nesting_level (64)"),
    (json.dumps({f"k{i}": i for i in range(1001)}).encode(), "1001 fields, over max_input_vars (1000)"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than json_decode() accepts"),
]


def test_bad_input_table_interleaved_with_good_messages(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    assert len(BAD_INPUT) >= 12
    daemon = start_daemon(pool.listen, worker=FAST)
    payloads: list[bytes | str] = []
    for i, (bad, _) in enumerate(BAD_INPUT):
        payloads += [json.dumps({"n": i}), bad]
    payloads.append(json.dumps({"n": len(BAD_INPUT)}))
    assert publish_many(redis_server.url, payloads) == [1] * len(payloads)

    wait_for(lambda: len(lines(pool.worker_log)) == len(BAD_INPUT) + 1, what="every good message")
    assert sorted(map(int, lines(pool.worker_log))) == list(range(len(BAD_INPUT) + 1))
    warnings = daemon.wait_for("WARNING skipped a message on commands", count=len(BAD_INPUT))
    assert len(warnings) == len(BAD_INPUT)
    for line, (_, reason) in zip(warnings, BAD_INPUT, strict=True):
        assert reason in line, (reason, line)
        assert len(line) < 600, "a preview is short"
    assert daemon.server.process.poll() is None


def test_sigterm_finishes_in_flight_and_queued_jobs(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool({"pm": "static"})  # all five children at once: 5 s for 25 one-second jobs
    daemon = start_daemon(pool.listen)
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(25)]) == [1] * 25
    daemon.wait_for("Spawned process with ID: 5")
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(30) == 0
    assert len(lines(pool.worker_log)) == 25
    assert daemon.lines(r"stopping \(SIGTERM\): 5 in flight, 20 queued")
    assert len(daemon.lines("status 200")) == 25
    assert daemon.lines("stopped · 25 received · 25 dispatched · 25 completed · 0 failed")
    assert daemon.lines("left undone") == []


def test_drain_timeout_logs_what_was_left_undone(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool({"pm": "static"})
    daemon = start_daemon(pool.listen, "--drain-timeout", "1.5")
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(25)]) == [1] * 25
    daemon.wait_for("Spawned process with ID: 5")
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(30) == 0
    done = daemon.lines("status 200")
    running = daemon.lines("WARNING job .* still running in the pool")
    undone = daemon.lines("ERROR job .* left undone")
    assert (len(done), len(running), len(undone)) == (5, 5, 15)
    assert all("timestamp=t" in line for line in undone)
    # The pool finishes what it had (ignore_user_abort = on in commands.conf).
    wait_for(lambda: len(lines(pool.worker_log)) == 10, what="the running jobs to finish in the pool")
    time.sleep(1.5)
    assert len(lines(pool.worker_log)) == 10


def test_second_signal_stops_at_once(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool({"pm": "static"})
    daemon = start_daemon(pool.listen)
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(25)]) == [1] * 25
    daemon.wait_for("Spawned process with ID: 5")
    started = time.monotonic()
    daemon.server.process.send_signal(signal.SIGTERM)
    daemon.wait_for("stopping")
    daemon.server.process.send_signal(signal.SIGINT)
    assert daemon.server.process.wait(30) == 0
    assert time.monotonic() - started < 1.0
    assert len(daemon.lines(r"still running in the pool \(stopped at once\)")) == 5
    assert len(daemon.lines(r"left undone \(stopped at once\)")) == 20


def test_queue_full_is_loud(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--max-in-flight", "1", "--max-queued", "3")
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(6)]) == [1] * 6
    dropped = daemon.wait_for("ERROR queue full", count=2)
    assert (
        "dropped job 5" in dropped[0] and "timestamp=t4" in dropped[0] and "(1 dropped so far)" in dropped[0]
    )
    assert "dropped job 6" in dropped[1] and "(2 dropped so far)" in dropped[1]
    daemon.wait_for("status 200", count=4)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    yield sock
    sock.close()


def test_notify_protocol_in_order(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon], notify_socket: socket.socket
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "1000000"}
    daemon = start_daemon(pool.listen, env=env)
    received: list[str] = []
    while not any("WATCHDOG=1" in m for m in received):
        received.append(notify_socket.recv(4096).decode())
    assert publish({"timestamp": "x"}, redis_url=redis_server.url) == 1
    daemon.wait_for("status 200")
    watchdogs_before = sum("WATCHDOG=1" in m for m in received)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        received.append(notify_socket.recv(4096).decode())
    assert sum("WATCHDOG=1" in m for m in received) - watchdogs_before >= 4  # every 0.5 s
    assert daemon.stop() == 0
    while not any("STOPPING=1" in m for m in received):
        received.append(notify_socket.recv(4096).decode())

    def first(field: str) -> int:
        return next(i for i, m in enumerate(received) if field in m)

    assert first("READY=1") < first("WATCHDOG=1") < first("STOPPING=1")
    assert first("READY=1") <= first("STATUS=subscribed")
    statuses = [m for m in received if m.startswith("STATUS=subscribed")]
    assert any("1 dispatched · 0 in flight · 0 queued · 0 failed" in s for s in statuses)


def test_sighup_reloads_what_can_change_live(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text('max_in_flight = 5\nlog_level = "INFO"\n')
    daemon = start_daemon(pool.listen, "--config", str(config))
    config.write_text('max_in_flight = 2\nlog_level = "WARNING"\nchannels = ["other"]\n')
    daemon.server.process.send_signal(signal.SIGHUP)
    daemon.wait_for("WARNING SIGHUP: settings reloaded; changed: max_in_flight, log_level")
    daemon.wait_for("WARNING SIGHUP: channels changed but take effect only after a restart")
    assert publish({"timestamp": "quiet"}, redis_url=redis_server.url) == 1
    wait_for(lambda: lines(pool.worker_log) == ["quiet"], what="the job after the reload")
    time.sleep(0.5)
    assert daemon.lines("Spawned|status 200") == []  # INFO lines are off now
