"""Faults on real processes: bursts, Redis and pool restarts, bad input, signals, sd_notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from asyncphp.caller import publish
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer
from asyncphp.loop.overflow import HEADER_SIZE, RECORD_OVERHEAD
from benchmarks.drivers import cpu_seconds
from tests.conftest import PHP_DIR, WORKER
from tests.integration.conftest import Daemon, heartbeat_counter, lines, notifications, pool_status, wait_for

FAST = PHP_DIR / "fast.php"
BEHAVE = PHP_DIR / "behave.php"


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
    # The pool stays down through several rounds of backoff, up to 1.6 s between attempts: the
    # head of the queue is tried again each time, the others wait behind it.
    daemon.wait_for(r"WARNING job 1 on commands: cannot connect .* retrying in 1\.60 s")
    retries = daemon.lines("cannot connect")
    delays = [float(line.rsplit("retrying in ", 1)[1].split()[0]) for line in retries[:6]]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6], retries
    assert all("job 1 on commands" in line for line in retries), retries
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
    # Nothing more comes: each bad message was logged once. A last good message is handled after
    # them all, in order; once it has run, any further line about them would be in the log.
    marker = len(BAD_INPUT) + 1
    assert publish_many(redis_server.url, [json.dumps({"n": marker})]) == [1]
    wait_for(lambda: str(marker) in lines(pool.worker_log), what="the marker message")
    assert sorted(map(int, lines(pool.worker_log))) == [*range(len(BAD_INPUT) + 1), marker]
    assert len(daemon.lines("WARNING skipped a message")) == len(BAD_INPUT)
    daemon.stop()
    assert daemon.lines(f"{len(BAD_INPUT)} rejected")


def test_sigterm_finishes_in_flight_and_queued_jobs(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool({"pm": "static"})  # all five children at once: 5 s for 25 one-second jobs
    daemon = start_daemon(pool.listen, "--log-level", "DEBUG")  # DEBUG: a line when a job is sent
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
    daemon = start_daemon(pool.listen, "--drain-timeout", "1.5", "--log-level", "DEBUG")
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(25)]) == [1] * 25
    daemon.wait_for("Spawned process with ID: 5")
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(30) == 0
    done = daemon.lines("status 200")
    running = daemon.lines("WARNING job .* still running in the pool")
    undone = daemon.lines("ERROR job .* left undone")
    assert (len(done), len(running), len(undone)) == (5, 5, 15)
    assert all('timestamp\\": \\"t' in line for line in undone), undone  # the message, as published
    # The pool finishes what it had (ignore_user_abort = on in commands.conf).
    wait_for(lambda: len(lines(pool.worker_log)) == 10, what="the running jobs to finish in the pool")
    # And it gets nothing more: once it is idle (this status request its only active process),
    # it has accepted the ten requests and our status requests, and nothing else. A connection the
    # daemon left queued would have been accepted before ours, by a child free long ago.
    asked = 0

    def idle() -> bool:
        nonlocal asked
        asked += 1
        return pool_status(pool)["active processes"] == 1

    wait_for(idle, what="the pool to be idle")
    status = pool_status(pool)
    asked += 1
    assert status["accepted conn"] - asked == 10, status
    assert len(lines(pool.worker_log)) == 10


def test_second_signal_stops_at_once(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool({"pm": "static"})
    daemon = start_daemon(pool.listen, "--log-level", "DEBUG")
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(25)]) == [1] * 25
    daemon.wait_for("Spawned process with ID: 5")
    daemon.server.process.send_signal(signal.SIGTERM)
    daemon.wait_for("stopping")
    daemon.server.process.send_signal(signal.SIGINT)
    assert daemon.server.process.wait(30) == 0
    # At once: it did not wait for the five one-second jobs it had sent (the worker logs each at
    # its start, then sleeps), nor for a drain: none of them had answered.
    assert daemon.lines("status 200") == []
    assert len(daemon.lines(r"still running in the pool \(stopped at once\)")) == 5
    assert len(daemon.lines(r"left undone \(stopped at once\)")) == 20


def test_queue_full_without_a_spill_file_is_loud(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--max-in-flight", "1", "--max-queued", "3")
    assert publish_many(redis_server.url, [json.dumps({"timestamp": f"t{i}"}) for i in range(6)]) == [1] * 6
    # The first drop is said at once; the next ones at most once a second, counted.
    (first,) = daemon.wait_for("ERROR dropped a message on commands")
    assert "the queue is full and no state_dir is set" in first and "; 1 dropped so far)" in first
    assert 't4\\"}' in first, first  # the message itself
    (second,) = daemon.wait_for("ERROR dropped .* 2 dropped so far")
    assert 't5\\"}' in second
    daemon.wait_for("status 200", count=4)
    daemon.stop()
    assert daemon.lines(
        "stopped · 6 received · 4 dispatched · 4 completed · 0 failed · 0 retried · 0 given up · 2 dropped"
    )


def test_queue_full_spills_and_every_message_runs_in_order(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    state = tmp_path / "state"
    daemon = start_daemon(
        pool.listen, "--max-in-flight", "1", "--max-queued", "2", "--state-dir", str(state), worker=FAST
    )
    assert publish_many(redis_server.url, numbered(200)) == [1] * 200
    (line,) = daemon.wait_for("WARNING the queue is full: messages on commands go to the spill files in")
    assert str(state) in line
    wait_for(lambda: len(lines(pool.worker_log)) == 200, what="all 200 jobs")
    assert lines(pool.worker_log) == [str(i) for i in range(200)], "oldest first, spilled or not"
    daemon.wait_for("spill files replayed")
    assert daemon.lines("ERROR") == []
    daemon.stop()
    (summary,) = daemon.lines("stopped · ")
    assert "200 received · 200 dispatched · 200 completed" in summary and " 0 dropped" in summary


def test_a_spill_file_torn_by_a_kill_loses_only_its_last_record(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Issue 23, item 14: a daemon killed while writing its spill file must cost the torn record
    # alone; every whole record before it runs at the next start, in order.
    state, release = tmp_path / "state", tmp_path / "release"
    daemon = start_daemon(
        pool.listen, "--max-in-flight", "1", "--max-queued", "2", "--state-dir", str(state), worker=BEHAVE
    )
    publish_many(redis_server.url, [json.dumps({"do": "until_file", "path": str(release)})])
    wait_for(lambda: lines(pool.worker_log) == ["until_file waiting"], what="the worker to hold the pool")
    notes = [json.dumps({"do": "note", "text": f"{i:05d}"}) for i in range(3002)]
    assert publish_many(redis_server.url, notes) == [1] * len(notes)
    record = RECORD_OVERHEAD + len("commands") + len(notes[0])
    kept = 3000  # two wait in the queue, the rest go to the spill file
    (spill,) = wait_for(lambda: list(state.glob("spill.*")), what="a spill file")
    wait_for(lambda: spill.stat().st_size == HEADER_SIZE + kept * record, what=f"{kept} records on disk")
    daemon.server.process.kill()
    daemon.server.process.wait()
    with spill.open("r+b") as f:
        f.truncate(HEADER_SIZE + kept * record - 3)  # the last record's write, cut short
    release.touch()
    wait_for(lambda: lines(pool.worker_log)[-1:] == ["until_file done"], what="the held job to end")

    again = start_daemon(pool.listen, "--state-dir", str(state), worker=BEHAVE)
    (line,) = again.wait_for("ERROR spill file .* cut off when the daemon last stopped: discarded")
    assert f"{record - 3} bytes" in line
    again.wait_for("spill files replayed")

    def ran() -> list[str]:
        return [n for n in lines(pool.worker_log) if n.isdigit()]

    wait_for(lambda: len(ran()) >= kept - 1, what="the whole records to run")
    # The two queued were in memory only (pub/sub is at most once under kill -9); the torn one
    # is the last; all the others run, once each.
    assert sorted(ran()) == [f"{i:05d}" for i in range(2, 3001)]
    again.stop()
    assert not again.lines("WARNING spill files in .* hold")[1:], "said once"


def test_notify_protocol_in_order(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon], notify_socket: socket.socket
) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "1000000"}
    daemon = start_daemon(pool.listen, env=env)
    received = notifications(notify_socket, until="WATCHDOG=1")
    assert publish({"timestamp": "x"}, redis_url=redis_server.url) == 1
    daemon.wait_for("status 200")
    # The pings go on from the loop, after the job as before it (WATCHDOG_USEC 1 s: every 0.5 s).
    for _ in range(4):
        received += notifications(notify_socket, until="WATCHDOG=1")
    assert daemon.stop() == 0
    received += notifications(notify_socket, until="STOPPING=1")

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
    daemon = start_daemon(pool.listen, "--config", str(config), "--heartbeat-interval", "0.2")
    config.write_text('max_in_flight = 2\nlog_level = "WARNING"\nchannels = ["other"]\n')
    daemon.server.process.send_signal(signal.SIGHUP)
    daemon.wait_for("WARNING SIGHUP: settings reloaded; changed: max_in_flight, log_level")
    daemon.wait_for("WARNING SIGHUP: channels changed but take effect only after a restart")
    assert publish({"timestamp": "quiet"}, redis_url=redis_server.url) == 1
    wait_for(lambda: lines(pool.worker_log) == ["quiet"], what="the job after the reload")
    # Its answer comes a second later (the worker sleeps); the heartbeat counts it after the
    # daemon would have logged it.
    with redis.Redis.from_url(redis_server.url) as client:
        wait_for(lambda: heartbeat_counter(client, "completed") == 1, what="the job's answer")
    assert daemon.lines("Spawned|status 200") == []  # INFO lines are off now


def test_full_listen_backlog_is_retried_not_lost(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # More requests in flight than children plus backlog: connect() meets EAGAIN, the job waits.
    pool = start_pool({"listen.backlog": "4"})
    daemon = start_daemon(pool.listen, "--log-level", "WARNING", "--max-in-flight", "64", worker=FAST)
    assert publish_many(redis_server.url, numbered(3000)) == [1] * 3000
    wait_for(lambda: len(lines(pool.worker_log)) >= 3000, timeout=120, what="3,000 worker lines")
    assert sorted(map(int, lines(pool.worker_log))) == list(range(3000))
    retried = daemon.lines("listen backlog full; attempt")
    assert retried, "the backlog never overflowed: the test did not test EAGAIN"
    assert daemon.lines("ERROR") == []
    print(f"\nbacklog 4, 64 in flight: {len(retried)} EAGAIN retries, nothing lost")


def test_redis_is_drained_while_the_pool_is_busy(
    tmp_path: Path, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # A small pub/sub output buffer limit: a daemon that stopped reading while its pool is busy
    # would be disconnected by Redis and lose what was buffered.
    (tmp_path / "strict").mkdir()
    strict = sandbox.start_redis(
        tmp_path / "strict", extra=("--client-output-buffer-limit", "pubsub 256kb 128kb 5")
    )
    try:
        pool = start_pool({"pm": "static"})
        log = tmp_path / "strict-daemon.log"
        flags = ("--drain-timeout", "0", "--heartbeat-interval", "0.2")
        daemon = Daemon(sandbox.start_daemon(strict.url, pool.listen, WORKER, *flags, log=log), log)
        wait_for(
            lambda: (
                daemon.server.process.poll() is None
                and "commands" in str(redis.Redis.from_url(strict.url).pubsub_channels())
            ),
            what="the subscription",
        )
        padding = "p" * 200
        payloads: list[bytes | str] = [
            json.dumps({"timestamp": f"t{i}", "pad": padding}) for i in range(5000)
        ]
        assert publish_many(strict.url, payloads) == [1] * 5000  # about 1.2 MB, with 5 one-second workers
        with redis.Redis.from_url(strict.url) as client:
            wait_for(
                lambda: heartbeat_counter(client, "received") == 5000 or daemon.lines("lost the connection"),
                what="the daemon to read all 5,000 messages",
            )
        daemon.server.process.send_signal(signal.SIGTERM)
        assert daemon.server.process.wait(30) == 0
        assert daemon.lines("lost the connection") == []
        (summary,) = daemon.lines("stopped · ")
        assert "5000 received" in summary
    finally:
        strict.stop()


def test_redis_restart_under_a_steady_stream_loses_only_what_nobody_received(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    import threading

    daemon = start_daemon(pool.listen, "--log-level", "WARNING", worker=FAST)
    delivered: list[int] = []
    refused: list[str] = []  # the publisher's errors while redis is down
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set() and i < 20_000:
            try:
                client = redis.Redis.from_url(
                    redis_server.url, socket_connect_timeout=0.2, socket_timeout=0.5
                )
                while not stop.is_set() and i < 20_000:
                    if client.publish("commands", json.dumps({"n": i})) == 1:
                        delivered.append(i)
                    i += 1
                    time.sleep(0.002)  # poll: pacing the load
            except redis.RedisError as exc:
                refused.append(str(exc))
                time.sleep(0.05)  # poll: pacing the reconnections while redis is down

    publisher = threading.Thread(target=stream)
    publisher.start()
    try:
        wait_for(lambda: len(lines(pool.worker_log)) >= 300, what="the stream to run through the pool")
        redis_server.stop()
        restarted_dir = tmp_path / "again"
        restarted_dir.mkdir()
        # Down long enough for both sides to meet it: the daemon fails to reconnect, the
        # publisher to publish.
        daemon.wait_for(r"ERROR cannot connect to redis at .* retrying in")
        wait_for(lambda: refused, what="the publisher to meet the outage")
        again = sandbox.start_redis(restarted_dir, port=redis_server.port)
        restarted = time.monotonic()
        daemon.wait_for("Resubscribed to commands after", timeout=15)
        recovered = time.monotonic() - restarted
        after = len(delivered)
        wait_for(lambda: len(delivered) >= after + 300, what="the stream to go on after the restart")
    finally:
        stop.set()
        publisher.join()
    try:
        wait_for(lambda: len(lines(pool.worker_log)) >= len(delivered), what="every delivered message")
        ran = [int(n) for n in lines(pool.worker_log)]
        assert sorted(ran) == sorted(delivered), "each message Redis delivered ran exactly once"
        assert daemon.server.process.poll() is None
        print(
            f"\nsteady stream: {len(delivered)} delivered, all ran once; back {recovered:.2f} s after restart"
        )
    finally:
        daemon.stop()
        again.stop()


def test_a_silent_redis_is_found_by_ping(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--redis-health-interval", "0.5")
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        daemon.wait_for(
            r"ERROR lost the connection to redis \(commands\): no answer to PING within 0\.5 s", timeout=15
        )
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    daemon.wait_for("Resubscribed to commands after", timeout=20)
    assert publish({"timestamp": "after the freeze"}, redis_url=redis_server.url) == 1
    daemon.wait_for("job 1 on commands: status 200")


def _connections_to(port: int) -> int:
    """Established TCP connections from here to 127.0.0.1:``port`` (/proc/net/tcp)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[2] == f"0100007F:{port:04X}" and row.split()[3] == "01")


def test_the_loop_goes_on_while_a_connection_to_a_hung_redis_is_opened(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 7): opening a connection ran in the loop, each step with a 2 s
    # timeout against a Redis that accepts and never answers: a job that ended meanwhile was seen
    # only once the open gave up, and nothing else was answered. Now the job's end is logged before
    # the open in progress fails.
    daemon = start_daemon(
        pool.listen, "--redis-health-interval", "0.5", "--log-level", "INFO", worker=PHP_DIR / "behave.php"
    )
    release = tmp_path / "release"
    publish({"do": "until_file", "path": str(release)}, redis_url=redis_server.url)
    wait_for(lambda: "until_file waiting" in lines(pool.worker_log), what="the job to start")
    redis_server.process.send_signal(signal.SIGSTOP)  # the kernel still accepts its connections
    try:
        daemon.wait_for("lost the connection to redis", timeout=15)
        wait_for(lambda: _connections_to(redis_server.port) > 0, what="a connection being opened")
        release.touch()  # the job ends while the open waits for Redis's first answer
        daemon.wait_for("job 1 on commands: status 200")
        daemon.wait_for("cannot connect to redis")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    log = daemon.lines()
    ended = next(i for i, line in enumerate(log) if "job 1 on commands: status 200" in line)
    failed = next(i for i, line in enumerate(log) if "cannot connect to redis" in line)
    assert ended < failed, "\n".join(log[-8:])
    daemon.wait_for("Resubscribed to commands after", timeout=30)


def test_sigterm_while_redis_is_down_exits_promptly(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen)
    redis_server.stop()
    daemon.wait_for("lost the connection to redis")
    before = drivers_cpu(daemon.server.pid)
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(10) == 0
    # Promptly: no reconnecting while stopping, and no spinning either.
    assert daemon.lines("stopped · ")
    reconnects = daemon.lines("cannot connect to redis")
    (stopping,) = daemon.lines("stopping")
    assert not any(lines(daemon.log).index(r) > lines(daemon.log).index(stopping) for r in reconnects)
    assert drivers_cpu(daemon.server.pid, default=before) - before < 1.0


def drivers_cpu(pid: int, default: float = 0.0) -> float:
    """The process's CPU seconds, or ``default`` once it is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return default


def test_status_says_when_redis_is_unreachable(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon], notify_socket: socket.socket
) -> None:
    start_daemon(pool.listen, env={"NOTIFY_SOCKET": notify_socket.getsockname()})
    redis_server.stop()
    while True:
        message = notify_socket.recv(4096).decode()
        if "STATUS=redis unreachable for" in message:
            assert "reconnecting · 0 dispatched · 0 in flight · 0 queued · 0 failed" in message
            return


def test_pool_killed_hard_then_restarted(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool()
    daemon = start_daemon(pool.listen, worker=FAST)
    pool.process.kill()  # no clean exit: the socket file stays, connect() is refused
    pool.process.wait()
    assert publish_many(redis_server.url, numbered(20)) == [1] * 20
    (line, *_) = daemon.wait_for("WARNING job 1 on commands: cannot connect")
    assert "Connection refused" in line
    back = start_pool()
    wait_for(lambda: len(lines(back.worker_log)) == 20, timeout=30, what="the 20 jobs after the restart")
    assert daemon.lines("given up") == []


def test_worker_killed_before_answering_is_retried_with_its_attempt_number(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--log-level", "DEBUG", worker=BEHAVE)
    assert publish({"do": "slow", "seconds": 3}, redis_url=redis_server.url) == 1
    wait_for(lambda: "slow attempt 1" in lines(pool.worker_log), what="the first attempt")
    for child in pool.children():
        os.kill(child, signal.SIGKILL)
    daemon.wait_for("WARNING job 1 on commands: .* before any answer; attempt 1, retrying")
    wait_for(lambda: "slow attempt 2" in lines(pool.worker_log), what="the second attempt")
    daemon.wait_for("Spawned process with ID: 1 \\(attempt 2\\)")
    daemon.wait_for("job 1 on commands: status 200", timeout=10)


def test_worker_killed_after_answering_is_not_retried(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, worker=BEHAVE)
    assert publish({"do": "answer_then_slow"}, redis_url=redis_server.url) == 1
    wait_for(lambda: "answered attempt 1" in lines(pool.worker_log), what="the answer to begin")
    for child in pool.children():
        os.kill(child, signal.SIGKILL)
    (line,) = daemon.wait_for("ERROR job 1 on commands failed: .* after the worker began to answer")
    assert "unknown outcome" in line and "answer_then_slow" in line
    # Not retried: a later job runs, and the summary counts no retry, ever.
    assert publish({"do": "note", "text": "marker"}, redis_url=redis_server.url) == 1
    daemon.wait_for("job 2 on commands: status 200")
    assert daemon.stop() == 0
    assert lines(pool.worker_log) == ["answered attempt 1", "marker"]
    assert daemon.lines("stopped · 2 received · 2 dispatched · 1 completed · 1 failed · 0 retried")


def test_a_peer_that_is_not_fastcgi_fails_the_job_without_retries(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    # A real server on the wrong port: past 64 kB without a newline, Redis answers a protocol error.
    daemon = start_daemon(f"127.0.0.1:{redis_server.port}")
    assert publish({"timestamp": "misrouted", "pad": "x" * 70_000}, redis_url=redis_server.url) == 1
    (line,) = daemon.wait_for("ERROR job 1 on commands failed: the pool's answer is not FastCGI")
    assert "misrouted" in line
    # Not retried: the next job meets the same end, and the summary counts no retry, ever.
    assert publish({"timestamp": "marker", "pad": "x" * 70_000}, redis_url=redis_server.url) == 1
    daemon.wait_for("ERROR job 2 on commands failed: the pool's answer is not FastCGI")
    assert daemon.stop() == 0
    assert daemon.lines("attempt") == []
    assert daemon.lines("stopped · 2 received · 2 dispatched · 0 completed · 2 failed · 0 retried")


def test_a_peer_that_never_answers_times_out(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    # Redis waits for the end of the line that our FastCGI request never sends.
    daemon = start_daemon(f"127.0.0.1:{redis_server.port}", "--request-timeout", "1")
    assert publish({"timestamp": "unanswered"}, redis_url=redis_server.url) == 1
    (line,) = daemon.wait_for("ERROR job 1 on commands failed: no complete answer within 1 s")
    assert "unanswered" in line


def test_large_messages_arrive_in_pieces_and_still_run(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, worker=BEHAVE)
    big = "z" * 900_000  # many reads of the Redis socket for one message
    payloads: list[bytes | str] = [
        json.dumps({"do": "note", "text": f"big {i}", "pad": big}) for i in range(5)
    ]
    assert publish_many(redis_server.url, payloads) == [1] * 5
    wait_for(lambda: sorted(lines(pool.worker_log)) == [f"big {i}" for i in range(5)], what="five large jobs")
    assert daemon.lines("lost the connection") == []


def test_an_idle_connection_is_pinged_and_lives_on(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--redis-health-interval", "0.2")
    client = redis.Redis.from_url(redis_server.url, socket_timeout=20)
    (subscriber,) = client.client_list(_type="pubsub")
    where = subscriber["addr"].rsplit(":", 1)
    # Several PING/PONG rounds on the subscribed connection, as Redis's MONITOR sees them.
    pings = 0
    with client.monitor() as monitor:
        while pings < 5:
            command = monitor.next_command()
            if [command["client_address"], command["client_port"]] == where:
                assert command["command"].upper() == "PING", command
                pings += 1
    assert publish({"timestamp": "after the pings"}, redis_url=redis_server.url) == 1
    daemon.wait_for("job 1 on commands: status 200")
    assert daemon.lines("lost the connection|Traceback") == []
    assert [c["id"] for c in client.client_list(_type="pubsub")] == [subscriber["id"]], "the same connection"
    client.close()


def test_a_subscriber_cut_off_by_redis_is_told_why(
    tmp_path: Path, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: the line said only "redis closed the connection", without the likely cause.
    (tmp_path / "strict").mkdir()
    strict = sandbox.start_redis(
        tmp_path / "strict", extra=("--client-output-buffer-limit", "pubsub 256kb 128kb 5")
    )
    pool = start_pool()
    log = tmp_path / "cut-daemon.log"
    daemon = Daemon(sandbox.start_daemon(strict.url, pool.listen, FAST, log=log), log)
    try:
        daemon.wait_for("Subscribed to commands")
        client = redis.Redis.from_url(strict.url)
        os.kill(daemon.server.pid, signal.SIGSTOP)  # a daemon that falls behind, for a moment
        try:
            padding = "p" * 1000
            published = 0
            # Past the kernel's socket buffers (a few MB on loopback), Redis's own output buffer
            # grows, until the limit cuts the subscriber off: at most 200 pipelines of 100 kB.
            for _ in range(200):
                with client.pipeline(transaction=False) as pipe:
                    for i in range(100):
                        pipe.publish("commands", json.dumps({"n": i, "pad": padding}))
                    published += sum(pipe.execute())
                if not client.pubsub_numsub("commands")[0][1]:
                    break
            assert client.pubsub_numsub("commands")[0][1] == 0, "redis never cut it off"
        finally:
            os.kill(daemon.server.pid, signal.SIGCONT)
        (line,) = daemon.wait_for("ERROR lost the connection to redis")
        assert "redis closed the connection" in line
        assert "pub/sub output buffer limit (256kb hard, 128kb for 5 s)" in line
        assert "durable mode (--stream)" in line
        daemon.wait_for("Resubscribed to commands after")
        print(f"\ncut off after {published} messages reached it; the daemon says: {line.split('ERROR ')[1]}")
    finally:
        daemon.stop()
        strict.stop()
