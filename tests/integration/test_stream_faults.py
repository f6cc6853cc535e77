"""The durable mode's settles on real servers: dead letters through a drain, a lost connection, a
vanished group, and the counters that report them."""

from __future__ import annotations

import contextlib
import re
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for
from tests.integration.test_streams import add_many

# "start n id attempt" when a run begins, "end n id attempt status" just before it answers.
FAULTS_WORKER = PHP_DIR / "stream_faults.php"
GROUP = "asyncphp"
DEAD_LINE = "ERROR entry .* dead-lettered to jobs:dead after"


def worker_lines(pool: Pool, kind: str) -> list[tuple[int, str, int, int]]:
    """(n, entry id, attempt, status) of the worker's "start" or "end" lines (status 0 for "start")."""
    found = []
    for line in lines(pool.worker_log):
        what, n, entry_id, attempt, *status = line.split()
        if what == kind:
            found.append((int(n), entry_id, int(attempt), int(status[0]) if status else 0))
    return found


def pending(client: redis.Redis) -> int:
    return int(client.xpending("jobs", GROUP)["pending"])


def xautoclaim_calls(client: redis.Redis) -> int:
    """XAUTOCLAIM commands Redis has run since it started: each is one claim pass of a daemon."""
    return int(client.info("commandstats").get("cmdstat_xautoclaim", {}).get("calls", 0))


def eval_held(client: redis.Redis) -> bool:
    """A client (the daemon's writer) is blocked in an EVAL: CLIENT PAUSE WRITE holds the dead letter."""
    return any(c["cmd"] == "eval" and "b" in c["flags"] for c in client.client_list())


def run_marker(url: str, client: redis.Redis, pool: Pool, n: int) -> None:
    """Add a good entry {"n": n} and wait until it has run and nothing is pending. The daemon reads
    entries in order and settles them on one connection, in order: once the marker is through,
    whatever it was going to run or settle before it is done."""
    add_many(url, 1, start=n)
    wait_for(lambda: n in [m for m, *_ in worker_lines(pool, "end")], what=f"the marker entry {n} to run")
    wait_for(lambda: pending(client) == 0, what=f"the marker entry {n} acknowledged")


def run_first(url: str, client: redis.Redis, pool: Pool, count: int) -> str:
    """Add ``count`` entries, wait until they ran and were acknowledged; returns the last id."""
    add_many(url, count)
    wait_for(lambda: len(worker_lines(pool, "end")) >= count, timeout=60, what=f"the first {count} runs")
    wait_for(lambda: pending(client) == 0, what=f"the first {count} acknowledged")
    return str(client.xrevrange("jobs", count=1)[0][0].decode())


@contextlib.contextmanager
def dead_letter_held(url: str, client: redis.Redis, pool: Pool) -> Iterator[None]:
    """A job that answers 422, its dead letter held by CLIENT PAUSE WRITE (an EVAL of a script is
    a write) for as long as the block runs."""
    add_many(url, 1, status=422, sleep=1)
    wait_for(lambda: worker_lines(pool, "start"), what="the job to start")
    client.client_pause(10_000, all=False)
    try:
        wait_for(lambda: eval_held(client), timeout=8, what="the daemon's dead letter held by the pause")
        assert client.xlen("jobs:dead") == 0
        yield
    finally:
        client.client_unpause()


def summary(daemon: Daemon) -> dict[str, int]:
    """The counters of the daemon's last line, ``stopped · 2 received · 4 dispatched · …``."""
    (line,) = daemon.lines(r"stopped · \d+ received")
    return {
        name: int(count)
        for count, name in re.findall(r"(\d+) ([a-z][a-z -]*[a-z])", line.split("stopped")[1])
    }


def sigterm(daemon: Daemon) -> None:
    daemon.server.process.send_signal(signal.SIGTERM)
    assert daemon.server.process.wait(30) == 0, daemon.log.read_text()


def test_a_dead_letter_written_during_a_sigterm_drain_is_acknowledged_in_the_same_step(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: a job answering 422 while SIGTERM drained left the daemon exiting with the dead
    # letter stored but the entry still pending; another consumer claimed it, ran the 4xx job again
    # and buried it a second time.
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    add_many(redis_server.url, 1, status=422, sleep=1)
    wait_for(lambda: worker_lines(pool, "start"), what="the job to start")
    sigterm(daemon)  # while the worker sleeps: the 422 comes during the drain

    assert [status for _, _, _, status in worker_lines(pool, "end")] == [422]
    order = [r"stopping \(SIGTERM\)", r"ERROR job \d+ on jobs: status 422", DEAD_LINE]
    logged = daemon.lines("|".join(order))
    assert [next(k for k, p in enumerate(order) if re.search(p, x)) for x in logged] == [0, 1, 2], logged
    assert client.xlen("jobs:dead") == 1
    assert pending(client) == 0, "the dead letter and its acknowledgement in one step"
    assert summary(daemon)["dead-lettered"] == 1

    # Another consumer, quick to claim: it must find nothing to take over.
    claims = xautoclaim_calls(client)
    second = start_daemon(
        pool.listen, "--stream", "jobs", "--claim-idle", "1", "--consumer", "second",
        worker=FAULTS_WORKER, wait=False,
    )  # fmt: skip
    # Passes at least claim_idle/2 apart: the fifth is over 2 s after the first daemon exited,
    # when an entry it had left pending would be idle for more than claim_idle.
    wait_for(lambda: xautoclaim_calls(client) >= claims + 5, timeout=30, what="five claim passes")
    assert second.lines("claimed") == []
    assert len(worker_lines(pool, "start")) == 1, "the 4xx job ran once"
    assert client.xlen("jobs:dead") == 1 and pending(client) == 0
    assert second.server.process.poll() is None
    client.close()


def test_an_entry_is_not_held_forever_when_its_dead_letter_write_loses_the_connection(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: the EVAL held by CLIENT PAUSE WRITE, then the connection killed: its callback was
    # dropped, the entry stayed held and kept being touched: 0 dead letters and 1 pending until a
    # restart.
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    with dead_letter_held(redis_server.url, client, pool):
        killed = client.client_kill_filter(_type="normal", skipme=True)  # the EVAL dies unexecuted
        assert killed >= 2, killed  # the daemon's reader and writer
    daemon.wait_for("lost the connection to redis")
    daemon.wait_for("Resubscribed to stream jobs")
    wait_for(
        lambda: client.xlen("jobs:dead") == 1 and pending(client) == 0,
        what="the dead letter written and the entry acknowledged after the reconnect",
    )
    # Nothing more: not a second dead letter, not a second run. A good entry added now is read
    # after anything the daemon would still deliver, and acknowledged after anything it would settle.
    run_marker(redis_server.url, client, pool, 1)
    ((_, fields),) = client.xrange("jobs:dead")
    assert fields[b"status"] == b"422" and fields[b"attempts"] == b"1"
    assert Counter(n for n, _, _, _ in worker_lines(pool, "start")) == Counter([0, 1])
    assert len(daemon.lines(DEAD_LINE)) == 1
    assert daemon.server.process.poll() is None
    client.close()


def test_a_vanished_group_is_re_created_at_the_last_entry_read(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: after XGROUP DESTROY the daemon re-created the group from 0, so every retained,
    # already acknowledged entry ran again with ASYNCPHP_ATTEMPT 1, and no line said so.
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    last = run_first(redis_server.url, client, pool, 100)

    client.xgroup_destroy("jobs", GROUP)  # unblocks the daemon's XREADGROUP with NOGROUP
    (line,) = daemon.wait_for(f"ERROR consumer group {GROUP} of stream jobs was missing .* re-created at ")
    assert re.search(r"re-created at (\S+?),", line)[1] == last  # type: ignore[index]

    add_many(redis_server.url, 50, start=100)
    wait_for(lambda: len(worker_lines(pool, "end")) >= 150, timeout=60, what="the 50 added afterwards")
    wait_for(lambda: pending(client) == 0, what="the 50 acknowledged")
    # Nothing more runs: a group re-created too early would deliver the old entries before this one.
    run_marker(redis_server.url, client, pool, 150)
    done = worker_lines(pool, "end")
    assert Counter(n for n, _, _, _ in done) == Counter(range(151)), "each entry exactly once"
    assert {(attempt, status) for _, _, attempt, status in done} == {(1, 200)}
    ids = [entry_id.decode() for entry_id, _ in client.xrange("jobs")]
    assert sorted(entry_id for _, entry_id, _, _ in done) == sorted(ids)
    assert daemon.server.process.poll() is None
    client.close()


def test_a_retry_whose_group_was_re_created_meanwhile_is_dead_lettered_not_lost(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 1): the group destroyed and made again while a failed job waited
    # for its retry; at the retry the entry was pending for nobody, the dead letter "only if still
    # pending" wrote nothing, a warning blamed a takeover, and the job was neither run nor kept.
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(
        pool.listen, "--stream", "jobs", "--retry-delay", "2", worker=FAULTS_WORKER, wait=False
    )
    add_many(redis_server.url, 1, status=500, fail=1)
    daemon.wait_for(r"entry \S+ of jobs: attempt 1 of 5 failed \(the worker failed\); again in 2.0 s")
    recreate = client.pipeline(transaction=True)  # at once: the daemon never sees the group missing
    recreate.xgroup_destroy("jobs", GROUP).xgroup_create("jobs", GROUP, id="$")
    recreate.execute()
    wait_for(
        lambda: client.xlen("jobs:dead") == 1, what="the dead letter of the job whose retry found it gone"
    )
    ((_, fields),) = client.xrange("jobs:dead")
    assert fields[b"reason"].startswith(b"no longer pending for this consumer when its retry was due")
    assert fields[b"status"] == b"500" and b'"status": 500' in fields[b"payload"]
    daemon.wait_for(DEAD_LINE)
    assert daemon.lines("taken over by another consumer") == []
    assert len(worker_lines(pool, "start")) == 1, "not run again: the dead letter keeps it, replayable"
    assert daemon.server.process.poll() is None
    client.close()


def test_a_group_deleted_while_no_daemon_runs_is_re_created_where_it_was(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Found in a fault run: XGROUP DESTROY during a SIGTERM drain, and the next daemon, knowing
    # nothing, created the group from 0: all 300 retained entries ran again, with attempt 1. The
    # group's position is now kept in jobs:groups, which outlives the group.
    client = redis.Redis.from_url(redis_server.url)
    first = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    last = run_first(redis_server.url, client, pool, 100)
    sigterm(first)
    assert client.hget("jobs:groups", GROUP) == last.encode(), "recorded, at the latest at the stop"
    client.xgroup_destroy("jobs", GROUP)

    second = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    (line,) = second.wait_for(f"ERROR consumer group {GROUP} of stream jobs was missing .* re-created at ")
    assert f"re-created at {last}," in line
    run_marker(redis_server.url, client, pool, 100)
    done = worker_lines(pool, "end")
    assert Counter(n for n, _, _, _ in done) == Counter(range(101)), "each entry exactly once"
    client.close()


def test_after_a_redis_restart_without_persistence_the_group_starts_at_the_last_entry_read(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: the group made again from 0 on the empty server, with no line saying the old
    # group (and what was pending in it) was gone.
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    add_many(redis_server.url, 20)
    wait_for(lambda: len(worker_lines(pool, "end")) >= 20, what="the first 20 runs")
    with redis.Redis.from_url(redis_server.url) as client:
        wait_for(lambda: pending(client) == 0, what="the first 20 acknowledged")
        last = client.xrevrange("jobs", count=1)[0][0].decode()
    redis_server.stop()
    daemon.wait_for("lost the connection to redis")
    (tmp_path / "again").mkdir()
    again = sandbox.start_redis(tmp_path / "again", port=redis_server.port)
    try:
        daemon.wait_for("Resubscribed to stream jobs")
        (line,) = daemon.wait_for(f"ERROR consumer group {GROUP} of stream jobs was missing")
        assert f"re-created at {last}," in line
        client = redis.Redis.from_url(again.url)
        (group,) = client.xinfo_groups("jobs")
        assert group["name"].decode() == GROUP
        add_many(again.url, 20, start=20)
        wait_for(lambda: len(worker_lines(pool, "end")) >= 40, what="the 20 after the restart")
        wait_for(lambda: pending(client) == 0, what="the 20 acknowledged on the new server")
        done = worker_lines(pool, "end")
        assert Counter(n for n, _, _, _ in done) == Counter(range(40))
        assert {attempt for _, _, attempt, _ in done} == {1}
        assert daemon.server.process.poll() is None
        client.close()
    finally:
        daemon.stop()
        again.stop()


def test_dispatched_counts_every_delivery_sent_to_the_pool(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: `dispatched` left out claimed entries and retried ones: the summary said
    # 1 dispatched for 4 requests the pool ran.
    client = redis.Redis.from_url(redis_server.url)
    client.xgroup_create("jobs", GROUP, "0", mkstream=True)
    add_many(redis_server.url, 1)  # n=0: read by a consumer that died before acknowledging it
    client.xreadgroup(GROUP, "ghost", {"jobs": ">"}, count=1)
    add_many(redis_server.url, 1, start=1, status=500, fail=2)  # n=1: 500 twice, then 200
    daemon = start_daemon(
        pool.listen, "--stream", "jobs", "--retry-delay", "0.2", "--max-attempts", "5", "--claim-idle", "1",
        worker=FAULTS_WORKER, wait=False,
    )  # fmt: skip
    wait_for(lambda: len(worker_lines(pool, "end")) >= 4, timeout=30, what="four runs")
    wait_for(lambda: pending(client) == 0, what="both acknowledged")
    daemon.wait_for("claimed 1 entry of jobs")
    sigterm(daemon)

    ends = sorted((n, attempt, status) for n, _, attempt, status in worker_lines(pool, "end"))
    assert ends == [(0, 2, 200), (1, 1, 500), (1, 2, 500), (1, 3, 200)]
    counts = summary(daemon)
    assert counts["dispatched"] == len(worker_lines(pool, "start")) == 4, counts
    assert counts["received"] == 2 and counts["completed"] == 2 and counts["failed"] == 2, counts
    assert counts["dead-lettered"] == 0, counts
    client.close()


def test_a_refused_dead_letter_is_not_counted(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: the dead letter was counted when sent, so the summary said 1 dead-lettered for
    # one Redis refused.
    client = redis.Redis.from_url(redis_server.url)
    client.set("jobs:dead", "not a stream")  # the script's XADD fails with WRONGTYPE
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    add_many(redis_server.url, 1, status=422)
    (line,) = daemon.wait_for("ERROR entry .* stays pending: redis refused its dead letter")
    assert "WRONGTYPE" in line
    sigterm(daemon)
    counts = summary(daemon)
    assert counts["dead-lettered"] == 0 and counts["failed"] == 1, counts
    assert daemon.lines(DEAD_LINE) == []
    assert pending(client) == 1, "not acknowledged: nothing lost"
    client.close()


def test_a_dead_letter_is_logged_and_counted_only_once_redis_confirmed_it(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour: the `dead-lettered to` line and the counter came when the dead letter was sent,
    # before Redis had stored it (here: while CLIENT PAUSE WRITE holds it).
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    with dead_letter_held(redis_server.url, client, pool):
        # The daemon has had its chance to log too early: a SIGHUP sent now is handled in a later
        # turn of its loop than the one that sent the dead letter.
        daemon.server.process.send_signal(signal.SIGHUP)
        daemon.wait_for("WARNING SIGHUP: settings reloaded; changed: nothing")
        assert daemon.lines("dead-lettered") == []
        assert client.xlen("jobs:dead") == 0

    stored_when_logged: list[int] = []

    def logged() -> bool:
        if daemon.lines(DEAD_LINE):
            stored_when_logged.append(client.xlen("jobs:dead"))
            return True
        return False

    wait_for(logged, what="the dead-letter line")
    assert stored_when_logged == [1], "in Redis by the time the line is logged"
    wait_for(lambda: pending(client) == 0, what="the entry acknowledged")
    sigterm(daemon)
    assert summary(daemon)["dead-lettered"] == 1
    assert len(daemon.lines(DEAD_LINE)) == 1
    client.close()


def test_a_body_over_the_pool_s_post_max_size_is_dead_lettered_not_taken_for_a_success(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 15): the worker ran with an empty $_POST, answered 200, and the job
    # was logged as completed; PHP's warning was in its stderr.
    pool = start_pool({"php_admin_value[post_max_size]": "1K"})
    client = redis.Redis.from_url(redis_server.url)
    daemon = start_daemon(pool.listen, "--stream", "jobs", worker=FAULTS_WORKER, wait=False)
    add_many(redis_server.url, 1, pad="x" * 4000)
    wait_for(lambda: client.xlen("jobs:dead") == 1, what="the dead letter of the body PHP threw away")
    ((_, fields),) = client.xrange("jobs:dead")
    assert b"post_max_size" in fields[b"reason"] and b"exceeds the limit" in fields[b"stderr"]
    assert fields[b"attempts"] == b"1", "not retried: the same body would fare no better"
    daemon.wait_for(DEAD_LINE)
    assert pending(client) == 0
    client.close()


def test_a_daemon_that_stops_holding_nothing_leaves_no_consumer_behind(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 6): every restart added <hostname>-<pid> to the group for good.
    client = redis.Redis.from_url(redis_server.url)
    for n in range(3):
        name = f"restart-{n}"
        daemon = start_daemon(
            pool.listen, "--stream", "jobs", "--consumer", name, worker=FAULTS_WORKER, wait=False
        )
        run_marker(redis_server.url, client, pool, n)
        assert name in [c["name"].decode() for c in client.xinfo_consumers("jobs", GROUP)]
        sigterm(daemon)
    assert client.xinfo_consumers("jobs", GROUP) == [], "none left behind"
    assert Counter(n for n, _, _, _ in worker_lines(pool, "end")) == Counter(range(3))
    client.close()


def test_consumers_that_hold_nothing_and_no_longer_read_are_removed_by_the_others(
    redis_server: RedisServer,
) -> None:
    # Old behaviour (issue 23, item 6): a daemon killed (no clean leave) stayed in the group for good,
    # and `status` counted it. PRUNE, as a daemon runs it every PRUNE_IDLE / 2, here with an
    # idle time of 50 ms instead of PRUNE_IDLE's 300 s.
    from asyncphp.wire.scripts import PRUNE

    client = redis.Redis.from_url(redis_server.url)
    client.xadd("jobs", {"payload": "{}"})
    client.xgroup_create("jobs", GROUP, id="0")
    client.xgroup_createconsumer("jobs", GROUP, "killed-1")  # read nothing, then died
    client.xreadgroup(GROUP, "killed-2", {"jobs": ">"}, count=1)  # died holding an entry: kept for a claim
    client.xgroup_createconsumer("jobs", GROUP, "me")

    def idle() -> bool:
        return all(c["idle"] >= 50 for c in client.xinfo_consumers("jobs", GROUP))

    wait_for(idle, what="every consumer idle for 50 ms")
    removed = client.eval(PRUNE, 1, "jobs", GROUP, "me", 50)
    assert removed == [b"killed-1"]
    assert sorted(c["name"] for c in client.xinfo_consumers("jobs", GROUP)) == [b"killed-2", b"me"]
    client.xreadgroup(GROUP, "fresh", {"jobs": ">"}, count=1)  # one that just read stays
    assert client.eval(PRUNE, 1, "jobs", GROUP, "me", 50) == []
    client.close()
