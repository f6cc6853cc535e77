"""Delayed, scheduled and unique jobs, priorities, per-stream limits and rates, on real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from asyncphp.caller import enqueue
from asyncphp.core.ledger import SETTLE_BATCH
from asyncphp.dev.sandbox import Pool, RedisServer
from asyncphp.wire import scripts
from asyncphp.wire.keys import Keys
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for

WORKER = PHP_DIR / "sched.php"
FIVE = {"pm": "static", "pm.max_children": "5"}


@dataclass(frozen=True)
class Start:
    stream: str
    n: int
    message_id: str
    due_at: float | None
    at: float
    request_id: int  # rises in the order the daemon queued the jobs


def starts(pool: Pool) -> list[Start]:
    """Every job the worker began, in the order it began them."""
    found = []
    for line in lines(pool.worker_log):
        if line.startswith("start "):
            _, stream, n, message_id, due, at, request_id = line.split()
            due_at = None if due == "-" else float(due)
            found.append(Start(stream, int(n), message_id, due_at, float(at), int(request_id)))
    return sorted(found, key=lambda s: s.at)


def most_running(pool: Pool, stream: str) -> int:
    path = Path(f"{pool.worker_log}.{stream}.running")
    return int(path.read_text().split()[1]) if path.exists() else 0


def add(url: str, stream: str, count: int, **fields: object) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(stream, {"payload": json.dumps({"n": n, **fields})})
    pipe.execute()
    client.close()


def move(client: redis.Redis, stream: str) -> scripts.Moved:
    """One run of the move, as a daemon runs it."""
    reply = client.register_script(scripts.MOVE)(keys=list(Keys(stream).moving()), args=[scripts.MOVE_BATCH])
    return scripts.moved(reply)


def asyncphp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncphp.cli", *args], capture_output=True, text=True, timeout=60
    )


# The scripts, on a real Redis.


def test_later_puts_an_entry_back_once_whether_its_send_was_resent_or_its_entry_claimed_away(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    later = client.register_script(scripts.LATER)
    keys = list(Keys("jobs").later())

    def send(entry_id: str, resent: int, consumer: str = "me") -> object:
        return later(keys=keys, args=["g", entry_id, consumer, resent, 60_000, '{"n":1}', 3, "1-0", ""])

    client.xgroup_create("jobs", "g", id="0", mkstream=True)
    first = client.xadd("jobs", {"payload": '{"n":1}'}).decode()
    client.xreadgroup("g", "me", {"jobs": ">"})
    assert send(first, 0) == b"d1" and client.hget("jobs:delayed:lineage", "d1") == b"3\n1-0"
    assert send(first, 1) == b"", "a resend of an applied send: its lineage's next run is delayed"
    # The first send lost with its connection, and the group re-created meanwhile (the entry
    # pending for nobody): the resend puts it back, not lost.
    lost = client.xadd("jobs", {"payload": '{"n":1}'}).decode()
    client.xgroup_destroy("jobs", "g")
    client.xgroup_create("jobs", "g", id="$")
    later(keys=keys, args=["g", lost, "me", 1, 60_000, '{"n":1}', 7, "5-0", ""])
    assert client.zcard("jobs:delayed") == 2 and b"7\n5-0" in client.hvals("jobs:delayed:lineage")
    # Claimed away and settled by another consumer: nothing added.
    other = client.xadd("jobs", {"payload": '{"n":2}'}).decode()
    client.xreadgroup("g", "them", {"jobs": ">"})
    client.xack("jobs", "g", other)
    assert send(other, 2) == b"" and client.zcard("jobs:delayed") == 2
    # Still held by the other: theirs to settle.
    held = client.xadd("jobs", {"payload": '{"n":3}'}).decode()
    client.xreadgroup("g", "them", {"jobs": ">"})
    assert send(held, 0) is None and client.zcard("jobs:delayed") == 2


def test_a_delayed_job_waits_beside_the_stream_and_is_moved_once_when_due(redis_server: RedisServer) -> None:
    url = redis_server.url
    client = redis.Redis.from_url(url)
    soon = enqueue({"n": 1}, stream="mail", redis_url=url, delay=0.3)
    later = enqueue({"n": 2}, stream="mail", redis_url=url, delay=3600)
    assert soon.added and soon.id == "d1" and later.id == "d2" and soon.due_at is not None
    assert client.xlen("mail") == 0 and client.zcard("mail:delayed") == 2
    first = move(client, "mail")
    assert first.ids == [] and 0 < first.next_due_in <= 0.3, "not yet due; says when"
    moved = wait_for(lambda: move(client, "mail").ids, what="the first job due")
    assert isinstance(moved, list) and [delayed for delayed, _ in moved] == ["d1"]
    [(entry_id, fields)] = client.xrange("mail")
    assert entry_id.decode() == moved[0][1]
    assert fields[b"payload"] == b'{"n":1}' and fields[b"delayed_id"] == b"d1"
    assert float(fields[b"due_at"]) == soon.due_at.timestamp()
    assert client.zrange("mail:delayed", 0, -1) == [b"d2"] and client.hkeys("mail:delayed:jobs") == [b"d2"]
    assert move(client, "mail").ids == [], "moved once"
    # A time in the past is due now: straight into the stream, with the time it was asked for.
    past = enqueue({"n": 3}, stream="mail", redis_url=url, at=datetime(2020, 1, 1, tzinfo=UTC))
    assert "-" in past.id and client.xrange("mail", past.id, past.id)[0][1][b"due_at"] == b"1577836800.000"
    client.close()


def test_a_job_due_before_all_others_is_announced_to_the_daemons(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    url = redis_server.url
    client = redis.Redis.from_url(url)
    start_daemon(pool.listen, "--stream", "jobs", worker=WORKER, wait=False)
    wait_for(lambda: client.pubsub_numsub("jobs:delayed")[0][1] == 1, what="the daemon to listen for notices")
    listener = client.pubsub()
    listener.subscribe("jobs:delayed")
    enqueue({"n": 1}, stream="jobs", redis_url=url, delay=60)
    enqueue({"n": 2}, stream="jobs", redis_url=url, delay=120)  # not the first due: not announced
    enqueue({"n": 3}, stream="jobs", redis_url=url, delay=0.2)
    notices = []
    for _ in range(50):  # bounded: each waits at most 0.1 s
        message = listener.get_message(timeout=0.1)
        if message and message["type"] == "message":
            notices.append(float(message["data"]))
        if len(notices) == 2:
            break
    assert [round(n / 1000) for n in notices] == [60, 0], notices
    wait_for(lambda: starts(pool), what="the announced job to run")
    assert [s.n for s in starts(pool)] == [3]
    listener.close()
    client.close()


def test_daemons_moving_at_the_same_time_move_each_job_once(redis_server: RedisServer) -> None:
    url = redis_server.url
    clients = [redis.Redis.from_url(url) for _ in range(4)]
    due = datetime.now(UTC) + timedelta(seconds=1)
    for n in range(600):
        assert enqueue({"n": n}, stream="jobs", client=clients[0], at=due).id == f"d{n + 1}"
    moved: list[list[tuple[str, str]]] = [[] for _ in clients]

    def mover(i: int) -> None:
        for _ in range(10_000):  # bounded: each turn is one script run
            if not clients[i].zcard("jobs:delayed"):
                return
            moved[i] += move(clients[i], "jobs").ids

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [delayed for ids in moved for delayed, _ in ids]
    assert sorted(everything) == sorted(f"d{n + 1}" for n in range(600)), "each moved exactly once"
    assert clients[0].xlen("jobs") == 600
    for client in clients:
        client.close()


def test_a_unique_key_admits_one_job_among_concurrent_publishers(redis_server: RedisServer) -> None:
    ids: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def publisher() -> None:
        client = redis.Redis.from_url(redis_server.url)
        for _ in range(100):
            done = enqueue({"n": 1}, stream="jobs", client=client, unique_key="welcome:42", unique_for=600)
            with lock:
                ids.append((done.id, done.added))
        client.close()

    threads = [threading.Thread(target=publisher) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 1000
    assert len({entry_id for entry_id, _ in ids}) == 1, "every publish returns the first one's id"
    assert sum(added for _, added in ids) == 1
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen("jobs") == 1
    assert 590 < client.ttl("jobs:unique:welcome:42") <= 600
    client.close()


def test_every_writer_trims_a_stream_to_the_length_its_publisher_keeps(redis_server: RedisServer) -> None:
    # Old behaviour: the delayed move, run-now and replay trimmed with MAXLEN ~ 1,000,000 whatever the
    # publisher asked, so one delayed job trimmed a stream kept at 5 M entries to 1 M (issue 23, item 4).
    # Here the publisher keeps 50 of a stream that holds 300: each writer trims to about 50.
    url = redis_server.url
    client = redis.Redis.from_url(url)
    client.config_set("stream-node-max-entries", 10)  # MAXLEN ~ trims whole nodes: 10 entries each
    add(url, "jobs", 300)
    untrimmed = enqueue({"n": "delayed"}, stream="jobs", client=client, delay=3600, maxlen=50)
    assert client.get("jobs:maxlen") == b"50", "the publisher's length is recorded beside the stream"
    assert client.xlen("jobs") == 300, "a delayed add writes nothing to the stream"
    done = asyncphp("delayed", "--redis-url", url, "--stream", "jobs", "run-now", untrimmed.id)
    assert done.returncode == 0, done.stderr
    assert 50 <= client.xlen("jobs") < 60, client.xlen("jobs")
    enqueue({"n": "due"}, stream="jobs", client=client, delay=0.001, maxlen=50)
    add(url, "jobs", 250)
    assert wait_for(lambda: move(client, "jobs").ids, what="the daemon's move of the due job")
    assert 50 <= client.xlen("jobs") < 60, client.xlen("jobs")
    add(url, "jobs", 250)
    client.xadd("jobs:dead", {"id": "1-1", "payload": '{"n": "dead"}', "attempts": 5})
    replayed = asyncphp("dead", "--redis-url", url, "--stream", "jobs", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert 50 <= client.xlen("jobs") < 60, client.xlen("jobs")
    assert json.loads(client.xrevrange("jobs", count=1)[0][1][b"payload"]) == {"n": "dead"}
    # A stream only ever published to plainly has no recorded length: a replay adds, trimming nothing.
    add(url, "plain", 300)
    client.xadd("plain:dead", {"id": "1-1", "payload": "{}", "attempts": 5})
    assert asyncphp("dead", "--redis-url", url, "--stream", "plain", "replay", "--all").returncode == 0
    assert client.xlen("plain") == 301
    client.close()


def test_a_unique_guard_follows_its_job_into_the_stream_and_only_its_holder_releases_it(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    client = redis.Redis.from_url(url)
    held = enqueue({"n": 1}, stream="jobs", redis_url=url, delay=3600, unique_key="k")
    again = enqueue({"n": 2}, stream="jobs", redis_url=url, unique_key="k")
    assert (again.added, again.id) == (False, held.id)
    done = asyncphp("delayed", "--redis-url", url, "--stream", "jobs", "run-now", held.id)
    assert done.returncode == 0, done.stderr
    [(entry_id, fields)] = client.xrange("jobs")
    assert fields[b"unique"] == b"jobs:unique:k"
    assert client.get("jobs:unique:k") == entry_id, "the guard names the entry now"
    unlock = client.register_script(scripts.UNLOCK)
    assert unlock(keys=["jobs:unique:k"], args=["1-1"]) == 0, "not the holder: kept"
    assert unlock(keys=["jobs:unique:k"], args=[entry_id]) == 1
    # Until expiry: the entry carries no guard to release, and the guard stays.
    expiring = enqueue({"n": 3}, stream="jobs", redis_url=url, unique_key="e", unique_until="expiry")
    assert b"unique" not in client.xrange("jobs", expiring.id, expiring.id)[0][1]
    assert client.get("jobs:unique:e") == expiring.id.encode()
    client.close()


def test_cancel_removes_a_delayed_job_and_its_guard(redis_server: RedisServer) -> None:
    url = redis_server.url
    job = enqueue({"n": 1}, stream="jobs", redis_url=url, delay=3600, unique_key="k")
    listed = asyncphp("delayed", "--redis-url", url, "--stream", "jobs", "list")
    assert listed.returncode == 0 and job.id in listed.stdout and '"{\\"n\\":1}"' in listed.stdout
    done = asyncphp("delayed", "--redis-url", url, "--stream", "jobs", "cancel", job.id, "d99")
    assert done.returncode == 1 and f"{job.id} cancelled" in done.stdout and "d99" in done.stderr
    client = redis.Redis.from_url(url)
    assert not client.exists("jobs:delayed", "jobs:delayed:jobs", "jobs:delayed:unique", "jobs:unique:k")
    assert enqueue({"n": 1}, stream="jobs", redis_url=url, unique_key="k").added, "free again"
    client.close()


def test_a_rate_s_bucket_is_shared_and_given_back(redis_server: RedisServer) -> None:
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(2)]
    takes = [c.register_script(scripts.TAKE) for c in clients]

    def take(i: int, count: int) -> scripts.Taken:
        # 1 token per second, a burst of 3: the clock cannot add one in this test's few ms.
        return scripts.taken(takes[i](keys=["jobs:rate"], args=["0.001", 3, count]))

    assert take(0, 2).granted == 2
    second = take(1, 2)
    assert second.granted == 1, "the other daemon shares the same bucket"
    assert 0.9 < second.wait <= 1.0, "the next whole token in about a second"
    assert take(0, -2).granted == 0  # given back
    assert take(1, 5).granted == 2
    for client in clients:
        client.close()


# The daemon.


def test_delayed_jobs_run_once_when_due_never_before_with_two_daemons(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pools = [start_pool(FIVE, name=f"host{i}") for i in (1, 2)]
    for i, pool in enumerate(pools):
        start_daemon(pool.listen, "--stream", "jobs", "--consumer", f"host{i}", worker=WORKER, wait=False)
    client = redis.Redis.from_url(redis_server.url)
    wait_for(lambda: client.exists("jobs"), what="the daemons to make the stream")
    for n in range(300):
        enqueue({"n": n}, stream="jobs", client=client, delay=0.3 + n / 150)
    wait_for(lambda: sum(len(starts(p)) for p in pools) >= 300, timeout=60, what="300 runs")
    everything = [s for p in pools for s in starts(p)]
    assert sorted(s.n for s in everything) == list(range(300)), "each exactly once"
    for s in everything:
        assert s.due_at is not None and s.at >= s.due_at - 0.001, f"job {s.n} ran before it was due"
    assert all(len(starts(p)) > 0 for p in pools), "both daemons took part"
    assert client.zcard("jobs:delayed") == 0
    client.close()


def test_delayed_jobs_survive_a_daemon_killed_around_its_moves(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    url = redis_server.url
    client = redis.Redis.from_url(url)
    # Moved by a daemon that died before it read them: ordinary entries, for whoever reads next.
    for n in range(20):
        enqueue({"n": n}, stream="jobs", client=client, at=datetime.now(UTC) + timedelta(seconds=0.2))
    wait_for(lambda: len(move(client, "jobs").ids) or client.xlen("jobs") == 20, what="the move")
    wait_for(lambda: client.xlen("jobs") == 20, what="all twenty moved")
    # And a daemon killed while jobs come due: the other moves and runs the rest.
    for n in range(20, 220):
        enqueue({"n": n}, stream="jobs", client=client, delay=0.2 + (n - 20) / 100)
    pools = [start_pool(FIVE, name=f"host{i}") for i in (1, 2)]
    flags = ("--stream", "jobs", "--claim-idle", "1", "--log-level", "WARNING")
    first = start_daemon(pools[0].listen, *flags, "--consumer", "a", worker=WORKER, wait=False)
    wait_for(lambda: len(starts(pools[0])) >= 60, timeout=30, what="the first daemon at work")
    os.kill(first.server.pid, signal.SIGKILL)
    start_daemon(pools[1].listen, *flags, "--consumer", "b", worker=WORKER, wait=False)
    seen = lambda: {s.n for p in pools for s in starts(p)}  # noqa: E731
    wait_for(lambda: seen() == set(range(220)), timeout=60, what="every job run")
    counts = Counter(s.n for p in pools for s in starts(p))
    twice = [n for n, c in counts.items() if c > 1]
    assert len(twice) <= 5 + SETTLE_BATCH, f"run again only what the killed daemon had unsettled: {twice}"
    client.close()


def test_a_cancelled_job_never_runs(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    url = redis_server.url
    start_daemon(pool.listen, "--stream", "jobs", worker=WORKER, wait=False)
    cancelled = enqueue({"n": 1}, stream="jobs", redis_url=url, delay=0.5)
    enqueue({"n": 2}, stream="jobs", redis_url=url, delay=1.0)  # due after it: its run proves time passed
    done = asyncphp("delayed", "--redis-url", url, "--stream", "jobs", "cancel", cancelled.id)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: starts(pool), what="the second job")
    assert [s.n for s in starts(pool)] == [2]


def test_strict_priority_runs_no_low_job_while_high_ones_wait(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool(FIVE)
    add(redis_server.url, "high", 150, ms=2)
    add(redis_server.url, "low", 150, ms=2)
    start_daemon(
        pool.listen, "--stream", "high", "--stream", "low", "--priority", "strict", "--log-level", "WARNING",
        worker=WORKER, wait=False,
    )  # fmt: skip
    wait_for(lambda: len(starts(pool)) >= 300, timeout=60, what="300 runs")
    # In the order the daemon handed them to the pool (queued, first in first out): five children
    # then begin them in whatever order the kernel runs them, a few microseconds apart.
    order = [s.stream for s in sorted(starts(pool), key=lambda s: s.request_id)]
    last_high = max(i for i, stream in enumerate(order) if stream == "high")
    assert order[: last_high + 1].count("low") == 0, "".join(s[0] for s in order)


def test_jobs_waiting_for_their_retry_leave_the_pool_to_other_work(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 10): each entry waiting for its retry held a read slot, so 10
    # failing jobs on a pool of 5 stopped every read until they were out of attempts (300 quick jobs
    # took 16.3 s instead of 0.06 s). Now the 300 all start before any failing job's second attempt.
    pool = start_pool(FIVE)
    add(redis_server.url, "jobs", 10, ms=200, fail=1)
    add(redis_server.url, "jobs", 300)
    start_daemon(
        pool.listen, "--stream", "jobs", "--retry-delay", "10", "--max-attempts", "2", "--log-level",
        "WARNING", worker=WORKER, wait=False,
    )  # fmt: skip
    wait_for(lambda: len(starts(pool)) >= 310, timeout=60, what="every job's first attempt")
    runs = Counter(s.message_id for s in starts(pool))  # a retry runs the same entry again
    assert len(runs) == 310 and all(count == 1 for count in runs.values()), runs.most_common(3)


def test_a_stream_whose_jobs_all_fail_does_not_starve_the_streams_below_it(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 10): with strict priority, 30 always-failing high jobs held the
    # reads while they waited for their retries: the first of 300 low jobs began after 7 s, the
    # pool 7 % busy. Now every low job starts before any high job's second attempt.
    pool = start_pool(FIVE)
    add(redis_server.url, "high", 30, ms=50, fail=1)
    add(redis_server.url, "low", 300)
    start_daemon(
        pool.listen, "--stream", "high", "--stream", "low", "--priority", "strict", "--retry-delay", "10",
        "--max-attempts", "2", "--log-level", "WARNING", worker=WORKER, wait=False,
    )  # fmt: skip
    wait_for(lambda: len(starts(pool)) >= 330, timeout=60, what="every job's first attempt")
    runs = Counter((s.stream, s.n) for s in starts(pool))
    assert len(runs) == 330 and all(count == 1 for count in runs.values()), runs.most_common(3)


def test_a_unique_guard_is_released_by_the_copy_that_holds_it_after_a_claim(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 12): a daemon that stalled while its unique job ran had the entry
    # claimed by another; its own copy then finished, acknowledged and released the guard while the
    # claimed copy still ran, and a second job of the key was accepted meanwhile.
    url = redis_server.url
    client = redis.Redis.from_url(url)
    pools = [start_pool(FIVE, name=f"pool{i}") for i in range(2)]
    flags = ("--stream", "jobs", "--claim-idle", "1", "--log-level", "INFO")
    stalled = start_daemon(pools[0].listen, *flags, worker=WORKER, wait=False)
    stalled.wait_for("Subscribed to stream jobs")
    held = enqueue({"n": 1, "ms": 3000}, stream="jobs", client=client, unique_key="k")
    wait_for(lambda: starts(pools[0]), what="the first daemon's copy to start")
    stalled.server.process.send_signal(signal.SIGSTOP)  # a long pause: its entries look idle
    try:
        other = start_daemon(pools[1].listen, *flags, worker=WORKER, wait=False)
        wait_for(lambda: starts(pools[1]), what="the second daemon's claimed copy to start")
    finally:
        stalled.server.process.send_signal(signal.SIGCONT)
    stalled.wait_for("claimed by another consumer while its job ran here")
    assert [line.split()[1] for line in lines(pools[1].worker_log)] == ["jobs"], "the claimed copy still runs"
    again = enqueue({"n": 2}, stream="jobs", client=client, unique_key="k")
    assert (again.added, again.id) == (False, held.id), "the guard still held for the copy that runs"
    wait_for(lambda: len(lines(pools[1].worker_log)) == 2, what="the claimed copy to end")
    wait_for(lambda: client.get("jobs:unique:k") is None, what="its settle to release the guard")
    assert enqueue({"n": 3}, stream="jobs", client=client, unique_key="k").added
    other.stop()
    client.close()


def test_a_replayed_dead_letter_of_a_unique_job_holds_its_key_again(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 12): the dead letter forgot the job was unique, so its replay ran
    # unguarded, and a second job of the key was accepted while the replayed one waited or ran.
    url = redis_server.url
    client = redis.Redis.from_url(url)
    daemon = start_daemon(pool.listen, "--stream", "jobs", "--max-attempts", "1", worker=WORKER, wait=False)
    daemon.wait_for("Subscribed to stream jobs")
    enqueue({"n": 1, "fail": 1}, stream="jobs", client=client, unique_key="k")
    wait_for(lambda: client.xlen("jobs:dead") == 1, what="the unique job dead-lettered")
    wait_for(lambda: client.get("jobs:unique:k") is None, what="its guard released after the dead letter")
    daemon.stop()
    [(_, letter)] = client.xrange("jobs:dead")
    assert letter[b"unique"] == b"jobs:unique:k"
    replayed = asyncphp("dead", "--redis-url", url, "--stream", "jobs", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    new_id = replayed.stdout.split()[-1]
    assert client.get("jobs:unique:k") == new_id.encode(), "the replayed job holds its key"
    assert client.xrange("jobs", new_id, new_id)[0][1][b"unique"] == b"jobs:unique:k"
    assert not enqueue({"n": 2}, stream="jobs", client=client, unique_key="k").added
    # A letter whose key another job holds stays a dead letter: replayed, both would run.
    client.xadd("jobs:dead", {"id": "1-1", "payload": '{"n": 3}', "attempts": 1, "unique": "jobs:unique:k"})
    held = asyncphp("dead", "--redis-url", url, "--stream", "jobs", "replay", "--all")
    assert held.returncode == 3 and f"job {new_id} holds its unique key" in held.stderr, held.stderr
    assert client.xlen("jobs:dead") == 1
    # A guard the dead job itself still holds (its daemon died before releasing it) is no obstacle.
    client.delete("jobs:dead")
    client.set("jobs:unique:own", "5-5", px=60_000)
    client.xadd("jobs:dead", {"id": "5-5", "payload": '{"n": 4}', "attempts": 1, "unique": "jobs:unique:own"})
    own = asyncphp("dead", "--redis-url", url, "--stream", "jobs", "replay", "--all")
    assert own.returncode == 0 and client.get("jobs:unique:own") == own.stdout.split()[-1].encode(), (
        own.stderr
    )
    client.close()


def test_a_stream_s_max_in_flight_holds_through_claims_of_a_dead_consumer_s_entries(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 11): a claim's entries stopped counting at the XAUTOCLAIM's reply
    # and were taken only at the XPENDING's after it; meanwhile the scan's next claim (or a read) took
    # their room: with slow=2, a daemon claiming what a killed one held ran 3 at once. (A race on real
    # servers, which the old code lost in some runs of this test; the pure test in test_ledger.py
    # holds the decision itself.)
    url = redis_server.url
    client = redis.Redis.from_url(url)
    add(url, "slow", 6, ms=1000)
    client.xgroup_create("slow", "asyncphp", id="0")
    client.xreadgroup("asyncphp", "killed-1", {"slow": ">"}, count=6)  # a daemon read them, then died
    add(url, "slow", 6, ms=1000)  # and new work, read as the claims go on
    start_daemon(
        pool.listen, "--stream", "slow", "--stream-max-in-flight", "slow=2", "--claim-idle", "1",
        worker=WORKER, wait=False,
    )  # fmt: skip

    def settled() -> bool:
        group = client.xinfo_groups("slow")[0]
        return bool(group["pending"] == 0 and group["lag"] == 0)

    wait_for(settled, timeout=60, what="every entry settled")
    assert most_running(pool, "slow") == 2, "never more than stream_max_in_flight at once"
    assert len({s.message_id for s in starts(pool)}) == 12, "the dead consumer's 6, and 6 new"
    client.close()


def test_weighted_priority_shares_the_pool_and_starves_nobody(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool(FIVE)
    for stream in ("high", "mid", "low"):
        add(redis_server.url, stream, 200, ms=2)
    start_daemon(
        pool.listen, "--stream", "high", "--stream", "mid", "--stream", "low", "--priority", "weighted",
        "--weights", "6:3:1", "--log-level", "WARNING", worker=WORKER, wait=False,
    )  # fmt: skip
    wait_for(lambda: len(starts(pool)) >= 200, timeout=60, what="200 runs")
    first = Counter(s.stream for s in starts(pool)[:200])
    # 120 : 60 : 20 by the weights; a read's batch either way.
    assert 100 <= first["high"] <= 140 and 45 <= first["mid"] <= 75 and 10 <= first["low"] <= 30, first


def test_a_stream_s_max_in_flight_holds_while_the_others_use_the_pool(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool({"pm": "static", "pm.max_children": "6"})
    add(redis_server.url, "slow", 12, ms=300)
    add(redis_server.url, "fast", 60, ms=50)
    start_daemon(
        pool.listen, "--stream", "slow", "--stream", "fast", "--stream-max-in-flight", "slow=2",
        "--max-in-flight", "6", "--log-level", "WARNING", worker=WORKER, wait=False,
    )  # fmt: skip
    wait_for(lambda: len(starts(pool)) >= 72, timeout=60, what="72 runs")
    assert most_running(pool, "slow") == 2, "two at once, never more"
    assert most_running(pool, "fast") >= 3, "the other children ran the other stream"


def test_a_rate_holds_across_two_daemons(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    add(redis_server.url, "mail", 40)
    pools = [start_pool(FIVE, name=f"host{i}") for i in (1, 2)]
    for i, pool in enumerate(pools):
        start_daemon(
            pool.listen, "--stream", "mail", "--stream-rate", "mail=10/s", "--consumer", f"host{i}",
            "--log-level", "WARNING", worker=WORKER, wait=False,
        )  # fmt: skip
    wait_for(lambda: sum(len(starts(p)) for p in pools) >= 40, timeout=60, what="40 runs")
    times = sorted(s.at for p in pools for s in starts(p))
    # Counted in the worker's own times: in any second, the rate and the bucket's burst (one).
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 10 + 1 + 1, busiest  # and one for the second's two edges
    assert all(len(starts(p)) for p in pools), "both daemons took part"


def test_a_unique_job_s_guard_goes_when_it_is_processed(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    url = redis_server.url
    start_daemon(pool.listen, "--stream", "jobs", worker=WORKER, wait=False)
    first = enqueue({"n": 1}, stream="jobs", redis_url=url, unique_key="report:7", unique_for=600)
    client = redis.Redis.from_url(url)
    wait_for(lambda: not client.exists("jobs:unique:report:7"), what="the guard released after the ack")
    assert [s.message_id for s in starts(pool)] == [first.id]
    assert enqueue({"n": 2}, stream="jobs", redis_url=url, unique_key="report:7").added
    client.close()


def test_status_shows_the_delayed_jobs_waiting(redis_server: RedisServer) -> None:
    url = redis_server.url
    job = enqueue({"n": 1}, stream="jobs", redis_url=url, delay=3600)
    done = asyncphp("status", "--redis-url", url, "--stream", "jobs", "--fpm-status-path", "", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)["streams"]["jobs"]
    assert job.due_at is not None
    assert info["delayed"] == 1 and info["next_due"] == job.due_at.timestamp()
    text = asyncphp("status", "--redis-url", url, "--stream", "jobs", "--fpm-status-path", "")
    assert "1 delayed, the next due" in text.stdout


# Under an ACL: what docs/scheduling.md asks for, and what a narrower one costs.


def acl_user(client: redis.Redis, name: str, *rules: str) -> str:
    client.execute_command("ACL", "SETUSER", name, "on", f">{name}-pw", "resetchannels", *rules)
    host, port = (
        client.connection_pool.connection_kwargs["host"],
        client.connection_pool.connection_kwargs["port"],
    )
    return f"redis://{name}:{name}-pw@{host}:{port}/0"


def test_without_the_notice_channel_jobs_are_still_added_whole_and_the_daemon_gets_ready(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, notify_socket: object
) -> None:
    import socket

    from asyncphp.dev import sandbox
    from tests.integration.conftest import notifications

    assert isinstance(notify_socket, socket.socket)
    admin = redis.Redis.from_url(redis_server.url)
    url = acl_user(
        admin, "keys_only", "~jobs*", "+@all"
    )  # no &jobs:delayed: Redis 7 denies channels by default
    # The announcement is refused; the add is not, nor its guard.
    first = enqueue({"n": 1}, stream="jobs", redis_url=url, delay=0.3, unique_key="k")
    second = enqueue({"n": 2}, stream="jobs", redis_url=url, delay=0.3, unique_key="k")
    assert first.added and not second.added and admin.zcard("jobs:delayed") == 1
    log = tmp_path / "acl-daemon.log"
    env = {"NOTIFY_SOCKET": notify_socket.getsockname()}
    daemon = Daemon(sandbox.start_daemon(url, pool.listen, WORKER, "--stream", "jobs", log=log, env=env), log)
    try:
        assert any("READY=1" in n for n in notifications(notify_socket, "READY=1"))
        daemon.wait_for("redis refused the subscription to jobs:delayed .*NOPERM")
        wait_for(lambda: starts(pool), what="the delayed job, moved by the refresh")
        assert [s.n for s in starts(pool)] == [1]
        assert len(daemon.lines("refused the subscription")) == 1, "said once"
    finally:
        daemon.stop()
    admin.close()


def test_without_client_unblock_a_limited_stream_is_read_by_short_blocks(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    url = acl_user(admin, "no_admin", "~*", "&*", "+@all", "-client|unblock")
    add(redis_server.url, "slow", 6, ms=50)
    admin.config_set("slowlog-log-slower-than", 0)  # every command, to see the reads' BLOCK
    admin.config_set("slowlog-max-len", 10_000)
    from asyncphp.dev import sandbox

    log = tmp_path / "unblock-daemon.log"
    daemon = Daemon(
        sandbox.start_daemon(
            url,
            pool.listen,
            WORKER,
            "--stream",
            "slow",
            "--stream",
            "other",
            "--stream-max-in-flight",
            "slow=1",
            log=log,
        ),
        log,
    )
    try:
        daemon.wait_for("redis refused CLIENT ID or UNBLOCK .*no permissions")
        wait_for(lambda: len(starts(pool)) == 6, what="six runs, one at a time")
        assert most_running(pool, "slow") == 1
        # While slow is at its limit, a blocking read waits on other alone; it is a short one
        # (BLOCK 100), so slow's next job waits for no 2 s read to end: as Redis logged the commands.
        reads = [e["command"] for e in admin.slowlog_get(1000) if e["command"].startswith(b"XREADGROUP")]
        assert any(b" BLOCK 100 " in c for c in reads) and not any(b" BLOCK 2000 " in c for c in reads), reads
    finally:
        daemon.stop()
    admin.close()
