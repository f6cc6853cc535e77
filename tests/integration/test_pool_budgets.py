"""The dispatcher's budgets on real servers: outage time, attempts, drops, spills and drain accounting."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from asyncphp.dev.sandbox import Pool, RedisServer
from benchmarks.drivers import cpu_seconds
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for
from tests.integration.test_faults import numbered, publish_many

BEHAVE = PHP_DIR / "behave.php"
FAST = PHP_DIR / "fast.php"


def summary(daemon: Daemon) -> dict[str, int]:
    """The counts of the daemon's last line, ``stopped · 25 received · 25 dispatched · …``."""
    (line,) = daemon.lines("stopped · ")
    return {name: int(n) for n, name in re.findall(r"· (\d+) ([a-z][a-z -]*[a-z])", line)}


def test_jobs_queued_behind_a_slow_job_are_not_given_up_while_the_pool_is_healthy(
    tmp_path: Path,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    # Old behaviour: an outage of the pool was cleared only by a complete answer, and a job's
    # retry_for counted from its arrival. The first job met the missing socket, then ran for 4 s;
    # the three jobs queued behind it (max_in_flight 1) were logged "given up … the pool stayed
    # unreachable" after 2 s in the queue and never ran, although the pool was healthy.
    socket_path = tmp_path / "pool" / "commands.sock"  # where start_pool() will listen
    daemon = start_daemon(socket_path, "--max-in-flight", "1", "--retry-for", "2", worker=BEHAVE)
    assert publish_many(redis_server.url, [json.dumps({"do": "slow", "seconds": 4})]) == [1]
    daemon.wait_for(r"WARNING job 1 on commands: cannot connect .*; attempt 1, retrying")

    pool = start_pool()
    assert pool.listen == str(socket_path)
    wait_for(lambda: "slow attempt 1" in lines(pool.worker_log), what="the slow job to start")
    quick = [json.dumps({"do": "note", "text": f"quick {i}"}) for i in range(3)]
    assert publish_many(redis_server.url, quick) == [1] * 3

    ended = daemon.wait_for(r"job \d on commands(: status 200| given up)", count=4, timeout=20)
    assert all("status 200" in line for line in ended), ended
    assert sorted(lines(pool.worker_log)) == ["quick 0", "quick 1", "quick 2", "slow attempt 1"]
    assert daemon.lines("ERROR") == []


def test_a_poison_job_is_retried_at_most_max_attempts_times_whatever_other_jobs_do(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: a child killed before it answered counted as the pool being unreachable, and
    # every good job's answer ended that "outage", so under a steady stream of good jobs the
    # poison job was started again and again (27 times in 30 s with retry_for 5), never failing.
    pool = start_pool({"request_terminate_timeout": "1s", "pm": "static"})
    daemon = start_daemon(pool.listen, "--max-attempts", "3", "--retry-for", "5", worker=BEHAVE)
    assert publish_many(redis_server.url, [json.dumps({"do": "slow", "seconds": 3})]) == [1]

    rate, count = 50, 300  # 50 good jobs a second for 6 s, from a thread
    delivered: list[int] = []

    def steady() -> None:
        client = redis.Redis.from_url(redis_server.url)
        started = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))  # poll: pacing the load
            delivered.append(client.publish("commands", json.dumps({"do": "note", "text": f"good {i}"})))
        client.close()

    publisher = threading.Thread(target=steady)
    publisher.start()

    def starts() -> list[str]:
        return [line for line in lines(pool.worker_log) if line.startswith("slow ")]

    try:
        # The job's end, or a fourth start that should never come.
        wait_for(
            lambda: daemon.lines("ERROR job 1 on commands") or len(starts()) > 3,
            timeout=30,
            what="the poison job to fail",
        )
    finally:
        publisher.join(timeout=60)
    assert not publisher.is_alive()
    assert delivered == [1] * count
    assert len(starts()) <= 3, starts()
    (failed,) = daemon.lines("ERROR job 1 on commands")
    assert re.search(r"failed: .* before any answer \(attempt 3 of 3\); message ", failed), failed
    assert '\\"do\\": \\"slow\\"' in failed  # the message, as published

    good = {f"good {i}" for i in range(count)}
    wait_for(lambda: good <= set(lines(pool.worker_log)), timeout=30, what="every good job")
    seen = lines(pool.worker_log)
    assert sorted(line for line in seen if line.startswith("good ")) == sorted(good)
    assert starts() == [f"slow attempt {i}" for i in (1, 2, 3)]
    assert len(daemon.lines(r"WARNING job 1 on commands: .* before any answer; attempt [12], retrying")) == 2
    assert daemon.lines("given up") == []


def stop_with_1499_queued(
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
    *extra: str,
) -> Daemon:
    """1,500 two-second jobs {"n": i} into one child, SIGTERM once the first runs, a drain of 0.5 s:
    one job still running, 1,499 never sent. Returns the stopped daemon."""
    pool = start_pool({"pm": "static", "pm.max_children": "1"})
    daemon = start_daemon(
        pool.listen, "--max-in-flight", "1", "--drain-timeout", "0.5", *extra, worker=BEHAVE
    )
    payloads: list[bytes | str] = [json.dumps({"do": "slow", "seconds": 2, "n": i}) for i in range(1500)]
    assert publish_many(redis_server.url, payloads) == [1] * 1500
    wait_for(lambda: "slow attempt 1" in lines(pool.worker_log), what="the first job to run")
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(30) == 0
    return daemon


def test_at_the_end_of_a_drain_every_undone_job_is_said_with_its_message(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: only the first 1,000 jobs never sent were logged with their message, the
    # rest as a count, and the summary line did not count them at all.
    daemon = stop_with_1499_queued(redis_server, start_pool, start_daemon)

    (running,) = daemon.lines("still running in the pool")
    assert " WARNING job 1 on commands still running in the pool (SIGTERM: drain ended)" in running
    undone = daemon.lines("left undone")
    assert len(undone) == 1499
    for job, line in enumerate(undone, start=2):  # job N carries the message {"n": N - 1}
        assert f" ERROR job {job} on commands left undone (SIGTERM: drain ended); message " in line, line
        assert f'\\"n\\": {job - 1}}}"' in line, line
    counts = summary(daemon)
    assert (counts["received"], counts["dispatched"], counts["unfinished"]) == (1500, 1, 1500)
    assert counts["completed"] == counts["spilled"] == counts["dropped"] == 0


def in_order(seen: list[int], expected: list[int], max_in_flight: int) -> bool:
    """Whether ``seen`` (worker log order) ran ``expected`` oldest first: with at most
    ``max_in_flight`` requests open, a job is sent only once all but ``max_in_flight - 1`` of the
    jobs before it have answered, so none can be logged more than that many places early."""
    rank = {n: i for i, n in enumerate(expected)}
    return all(position >= rank[n] - (max_in_flight - 1) for position, n in enumerate(seen))


def test_at_the_end_of_a_drain_queued_jobs_are_spilled_and_run_at_the_next_start(
    tmp_path: Path,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    # Old behaviour: as above, 499 of the 1,499 jobs never sent were only a count in the log;
    # here they must go to the spill file instead of a log line each, and run at the next start.
    state = tmp_path / "state"
    daemon = stop_with_1499_queued(redis_server, start_pool, start_daemon, "--state-dir", str(state))

    assert daemon.lines("left undone|ERROR") == []
    assert len(daemon.lines("WARNING job 1 on commands still running in the pool")) == 1
    assert daemon.lines(f"WARNING the drain ended: messages on commands go to the spill files in {state}")
    counts = summary(daemon)
    assert (counts["received"], counts["dispatched"], counts["unfinished"]) == (1500, 1, 1)
    assert (counts["spilled"], counts["dropped"]) == (1499, 0)

    # The next daemon on the same state_dir runs them, oldest first (its worker logs "n").
    fast = start_pool({"pm": "static"}, name="fast")
    again = start_daemon(fast.listen, "--state-dir", str(state), worker=FAST)
    again.wait_for("WARNING spill files in .* hold 1499 messages from before: they run first")
    wait_for(lambda: len(lines(fast.worker_log)) >= 1499, what="the 1,499 spilled jobs")
    seen = [int(n) for n in lines(fast.worker_log)]
    assert sorted(seen) == list(range(1, 1500))
    assert in_order(seen, list(range(1, 1500)), max_in_flight=5), seen
    again.wait_for(r"job 1499 on commands: status 200")
    assert again.lines("ERROR") == []


BURST = 200_000
PAD = "x" * 180  # about 250 bytes a message in Redis's output buffer: 50 MB for the burst, past 32 MB


def pubsub_buffer(client: redis.Redis) -> int | None:
    """Bytes Redis holds for the (only) subscriber; None once there is no subscriber."""
    subscribers = client.client_list(_type="pubsub")
    if not subscribers:
        return None
    (subscriber,) = subscribers
    return int(subscriber["omem"]) + int(subscriber["obl"])


def burst(url: str) -> tuple[int, float, int]:
    """Publish BURST messages {"n": i, "pad": …} at full speed, in pipelines of 1,000; returns how
    many reached a subscriber, the seconds from the first publish until Redis's output buffer for
    the subscriber was empty, and the largest such buffer seen on the way."""
    client = redis.Redis.from_url(url)
    delivered = peak = 0
    started = time.monotonic()
    for start in range(0, BURST, 1000):
        with client.pipeline(transaction=False) as pipe:
            for n in range(start, start + 1000):
                pipe.publish("commands", f'{{"n": {n}, "pad": "{PAD}"}}')
            delivered += sum(pipe.execute())
        if start % 10_000 == 0:
            peak = max(peak, pubsub_buffer(client) or 0)
    # Polled finely (bounded in time): the moment it empties is the measurement.
    deadline = time.monotonic() + 60
    while pubsub_buffer(client) and time.monotonic() < deadline:
        time.sleep(0.002)  # poll
    drained = time.monotonic() - started
    assert not pubsub_buffer(client), "redis still holds messages for the daemon after 60 s"
    client.close()
    return delivered, drained, peak


def heartbeat_received(client: redis.Redis) -> int:
    """How many messages the daemon's heartbeat (every 0.2 s here) says it has received."""
    keys = client.keys("asyncphp:daemon:*")
    return max((int(client.hget(key, "received") or 0) for key in keys), default=0)


def stop_with_a_summary(daemon: Daemon, config: Path) -> None:
    """SIGTERM, with the log level back at INFO first: the summary line is an INFO line."""
    config.write_text('log_level = "INFO"\n')
    daemon.server.process.send_signal(signal.SIGHUP)
    daemon.wait_for("WARNING SIGHUP: settings reloaded; changed: log_level")
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(30) == 0


def burst_into_a_pool_that_is_down(
    tmp_path: Path, url: str, start_daemon: Callable[..., Daemon], *extra: str
) -> tuple[Daemon, float]:
    """A daemon with the pool down and room for 1,000 queued messages takes the burst and is
    stopped once its heartbeat has counted all of it; returns it and how long it ran."""
    config = tmp_path / "daemon.toml"
    config.write_text('log_level = "WARNING"\n')  # the flag would override the SIGHUP to INFO
    daemon = start_daemon(
        tmp_path / "nowhere.sock", "--config", str(config), "--max-queued", "1000",
        "--drain-timeout", "0", "--heartbeat-interval", "0.2", *extra,
    )  # fmt: skip
    cpu = cpu_seconds(daemon.server.pid)
    started = time.monotonic()
    delivered, drained, peak = burst(url)
    # What Redis has sent may still be in the kernel's buffers: the daemon's count says when it is in.
    with redis.Redis.from_url(url) as client:
        wait_for(
            lambda: heartbeat_received(client) == BURST or daemon.lines("lost the connection"),
            timeout=30,
            what="the daemon to count the whole burst",
        )
    assert daemon.lines("lost the connection|closed the connection") == [], "redis cut the daemon off"
    assert delivered == BURST
    cpu = cpu_seconds(daemon.server.pid) - cpu
    stop_with_a_summary(daemon, config)
    ran_for = time.monotonic() - started
    print(
        f"\n{' '.join(extra) or 'no state_dir'}: {BURST / drained:,.0f} msg/s received "
        f"({BURST:,} in {drained:.2f} s from the first publish to an empty redis buffer); "
        f"redis buffered at most {peak / 1e6:.1f} MB; daemon CPU {cpu / BURST * 1e6:.1f} µs a message"
    )
    return daemon, ran_for


def test_a_200000_message_burst_into_a_pool_that_is_down_is_dropped_at_redis_speed(
    tmp_path: Path, redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: each dropped message had an ERROR line of its own; the daemon read ~12k
    # msg/s, Redis's default pub/sub output buffer limit (32 MB) cut it off mid-burst and ~127k
    # messages died inside Redis, the log saying only "redis closed the connection".
    daemon, ran_for = burst_into_a_pool_that_is_down(tmp_path, redis_server.url, start_daemon)
    counts = summary(daemon)
    assert counts["received"] == BURST
    assert counts["dropped"] + counts["unfinished"] + counts["given up"] == BURST
    assert counts["dropped"] >= BURST - 1000  # all but what the queue holds
    assert len(daemon.lines("left undone")) == counts["unfinished"]
    drops = daemon.lines("ERROR dropped")
    assert len(drops) <= ran_for + 2, "at most one line a second, and the last at the stop"
    assert f"; {counts['dropped']} dropped so far)" in drops[-1]


def test_a_200000_message_burst_into_a_pool_that_is_down_is_spilled_and_runs_later(
    tmp_path: Path,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    # Old behaviour: as above, the daemon was cut off by Redis and most of the burst never
    # reached it, so it could not be spilled either.
    state = tmp_path / "state"
    daemon, _ = burst_into_a_pool_that_is_down(
        tmp_path, redis_server.url, start_daemon, "--state-dir", str(state)
    )
    counts = summary(daemon)
    assert counts["received"] == BURST
    assert counts["spilled"] + counts["given up"] == BURST
    assert counts["dropped"] == counts["unfinished"] == 0
    assert daemon.lines("ERROR") == []

    # The pool is back: a new daemon on the same state_dir runs every spilled message.
    pool = start_pool({"pm": "static"})
    again = start_daemon(pool.listen, "--state-dir", str(state), "--log-level", "WARNING", worker=FAST)
    wait_for(lambda: line_count(pool.worker_log) >= BURST, timeout=90, what="every spilled message")
    seen = [int(n) for n in lines(pool.worker_log)]
    assert sorted(seen) == list(range(BURST))
    # Oldest first, the 1,000 still queued at the stop (the oldest: a spill file of their own) too.
    assert in_order(seen, list(range(BURST)), max_in_flight=5), out_of_order(seen, 0, 5)
    assert again.lines("ERROR") == []


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def out_of_order(seen: list[int], first: int, max_in_flight: int) -> str:
    """Where ``seen`` (expected: ``first``, ``first + 1``, …) has a job too early, for a failure."""
    for position, n in enumerate(seen):
        if position < n - first - (max_in_flight - 1):
            return f"n={n} ran at position {position}; the first to run: {seen[:10]}"
    return ""


def test_a_pool_outage_longer_than_retry_for_is_carried_through_by_the_spill_files_in_order(
    tmp_path: Path,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    # Found in a fault run: jobs given up in one batch went to the spill files one file each, the
    # newer before the older, and jobs still queued ran before older ones already spilled.
    socket = tmp_path / "pool" / "commands.sock"
    daemon = start_daemon(
        socket, "--state-dir", str(tmp_path / "state"), "--retry-for", "1", "--max-in-flight", "3",
        "--log-level", "WARNING", worker=FAST,
    )  # fmt: skip
    # Half before the pool is given up on, half after: some given up, the rest queued or spilled.
    assert publish_many(redis_server.url, numbered(300)) == [1] * 300
    daemon.wait_for("WARNING the pool stayed unreachable: messages on commands go to the spill files")
    assert publish_many(redis_server.url, numbered(300, start=300)) == [1] * 300
    pool = start_pool()
    assert pool.listen == str(socket)
    daemon.wait_for("the pool at .* accepts connections again")
    wait_for(lambda: len(lines(pool.worker_log)) >= 600, timeout=60, what="all 600 jobs")
    seen = [int(n) for n in lines(pool.worker_log)]
    assert sorted(seen) == list(range(600)), "each exactly once"
    assert in_order(seen, list(range(600)), max_in_flight=3), out_of_order(seen, 0, 3)
    assert daemon.lines("ERROR") == []
