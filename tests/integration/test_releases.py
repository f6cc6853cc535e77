"""Release-aware jobs on real servers: each job runs the code of the release that published it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from asyncphp.caller import enqueue, publish
from asyncphp.dev.sandbox import Pool, RedisServer
from asyncphp.wire.keys import DAEMON_PREFIX
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for

WORKER = PHP_DIR / "release_worker.php"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def deploy(root: Path, release: str) -> None:
    (root / release).mkdir(parents=True)
    shutil.copy(WORKER, root / release / "worker.php")


def switch(root: Path, release: str) -> None:
    """Point ``current`` at ``release``, atomically, as deploy tools do."""
    link = root / "current.new"
    link.symlink_to(release)
    os.replace(link, root / "current")


def ran(pool: Pool) -> list[tuple[str, str, int, str]]:
    """(directory the code ran from, the job's release, n, traceparent) per run."""
    return [(d, r, int(n), t) for d, r, n, t in (line.split() for line in lines(pool.worker_log))]


def flags(root: Path, *extra: str) -> tuple[str, ...]:
    return (
        "--worker-script", str(root / "{release}" / "worker.php"), "--releases-root", str(root),
        "--default-release", "current", *extra,
    )  # fmt: skip


def with_r1(
    tmp_path: Path, pool: Pool, start_daemon: Callable[..., Daemon], url: str, *extra: str
) -> tuple[Daemon, redis.Redis]:
    """A daemon on the channel 'commands' (and ``extra``) whose releases root holds r1, as current;
    returned once subscribed, with a client."""
    root = tmp_path / "releases"
    deploy(root, "r1")
    switch(root, "r1")
    daemon = start_daemon(pool.listen, *flags(root, "--channel", "commands", *extra), wait=False)
    client = redis.Redis.from_url(url)
    wait_for(lambda: client.pubsub_numsub("commands")[0][1] == 1, what="the daemon's subscription")
    return daemon, client


def publish_many(url: str, release: str, numbers: range) -> None:
    for n in numbers:
        publish({"n": n}, channel="commands", redis_url=url, release=release)


def test_jobs_run_the_code_of_the_release_that_published_them(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    root = tmp_path / "releases"
    deploy(root, "r1")
    deploy(root, "r2")
    switch(root, "r1")
    url = redis_server.url
    daemon = start_daemon(pool.listen, *flags(root, "--stream", "jobs", "--channel", "commands"), wait=False)
    wait_for(lambda: daemon.lines("Subscribed to stream jobs"), what="the daemon")
    enqueue({"n": 1}, stream="jobs", redis_url=url, release="r1")
    enqueue({"n": 2}, stream="jobs", redis_url=url)  # no release: current, r1 now
    wait_for(lambda: len(ran(pool)) == 2, what="two runs")
    switch(root, "r2")  # the deploy: r1's jobs still run r1's code
    enqueue({"n": 3}, stream="jobs", redis_url=url, release="r1", traceparent=TRACE)
    enqueue({"n": 4}, stream="jobs", redis_url=url, release="r2")
    wait_for(lambda: len(ran(pool)) == 4, what="four runs")
    runs = {n: (directory, release, trace) for directory, release, n, trace in ran(pool)}
    assert runs[1] == ("r1", "r1", "-") and runs[3] == ("r1", "r1", TRACE) and runs[4] == ("r2", "r2", "-")
    assert runs[2] == ("r1", "current", "-"), "current, as it was when the job came"
    # A default job after the switch, through pub/sub: current is r2 once the daemon looks again.
    wait_for(
        lambda: publish({"n": 5}, redis_url=url) and any(n == 5 and d == "r2" for d, _, n, _ in ran(pool)),
        timeout=10, what="a job of current running r2's code",
    )  # fmt: skip
    assert "release r1" in pool.access_log.read_text(), "the access log names the release"


def test_a_job_waits_for_its_release_then_runs_and_one_that_never_comes_is_dead_lettered(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    root = tmp_path / "releases"
    deploy(root, "r1")
    switch(root, "r1")
    url = redis_server.url
    daemon = start_daemon(
        pool.listen,
        *flags(root, "--stream", "jobs", "--release-wait", "6", "--heartbeat-interval", "0.2"),
        wait=False,
    )
    wait_for(lambda: daemon.lines("Subscribed to stream jobs"), what="the daemon")
    enqueue({"n": 1}, stream="jobs", redis_url=url, release="r3")
    enqueue({"n": 2}, stream="jobs", redis_url=url, release="r9")  # never deployed
    daemon.wait_for("release r3 is not on this host")
    client = redis.Redis.from_url(url)

    def waiting() -> str:
        # asyncphp status reads it from here: the daemon's heartbeat.
        keys = client.keys(DAEMON_PREFIX + "*")
        return (client.hget(keys[0], "releases_waiting") or b"").decode() if keys else ""

    wait_for(lambda: "r3=1" in waiting().split(","), what="the heartbeat to show the job waiting")
    status = subprocess.run(
        [sys.executable, "-m", "asyncphp", "status", "--redis-url", url, "--fpm-status-path", ""],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "1 waiting for release r3" in status.stdout, status.stdout + status.stderr
    deploy(root, "r3")  # the deploy reaches this host
    wait_for(lambda: ran(pool), what="the job of r3")
    assert ran(pool) == [("r3", "r3", 1, "-")]
    wait_for(lambda: client.xlen("jobs:dead") == 1, what="r9's job dead-lettered after release_wait")
    [(_, letter)] = client.xrange("jobs:dead")
    assert b"release r9 did not reach this host within release_wait (6 s)" in letter[b"reason"]
    client.close()


def test_a_release_id_that_could_leave_the_releases_root_never_runs(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    root = tmp_path / "releases"
    deploy(root, "r1")
    outside = tmp_path / "outside"
    deploy(outside, "evil")
    (root / "evil").symlink_to(outside / "evil")  # a link left pointing out of the root
    url = redis_server.url
    daemon = start_daemon(pool.listen, *flags(root, "--stream", "jobs"), wait=False)
    wait_for(lambda: daemon.lines("Subscribed to stream jobs"), what="the daemon")
    client = redis.Redis.from_url(url)
    # Hand-built, as a publisher that skips the client's own check would send it.
    client.xadd("jobs", {"payload": json.dumps({"n": 1, "_asyncphp": {"release": "../outside/evil"}})})
    enqueue({"n": 2}, stream="jobs", redis_url=url, release="evil")
    wait_for(lambda: client.xlen("jobs:dead") == 2, what="both dead-lettered")
    reasons = [letter[b"reason"].decode() for _, letter in client.xrange("jobs:dead")]
    assert "is not a release id" in reasons[0] and "outside releases_root" in reasons[1], reasons
    assert ran(pool) == []
    client.close()


def test_a_rolling_deploy_over_two_daemons_loses_and_misruns_nothing(
    tmp_path: Path,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    hosts = [tmp_path / "host1", tmp_path / "host2"]
    pools = [start_pool({"pm": "static"}, name=host.name) for host in hosts]
    for host in hosts:
        deploy(host / "releases", "r1")
        switch(host / "releases", "r1")
    daemons = [
        start_daemon(
            pool.listen, *flags(host / "releases", "--stream", "jobs", "--consumer", host.name), wait=False
        )
        for host, pool in zip(hosts, pools, strict=True)
    ]
    for daemon in daemons:
        wait_for(lambda d=daemon: d.lines("Subscribed to stream jobs"), what="both daemons")
    url = redis_server.url
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    # The deploy of r2 reaches host1 first; publishers switch to r2 as soon as it is out anywhere.
    for n in range(300):
        if n == 100:
            pipe.execute()
            deploy(hosts[0] / "releases", "r2")
            switch(hosts[0] / "releases", "r2")
        if n == 200:
            pipe.execute()
            deploy(hosts[1] / "releases", "r2")
            switch(hosts[1] / "releases", "r2")
        release = "r1" if n < 100 else "r2"
        pipe.xadd("jobs", {"payload": json.dumps({"n": n, "_asyncphp": {"release": release}})})
    pipe.execute()
    wait_for(lambda: sum(len(ran(p)) for p in pools) >= 300, timeout=60, what="every job run")
    runs = [run for pool in pools for run in ran(pool)]
    assert sorted(n for _, _, n, _ in runs) == list(range(300)), "each once, none lost"
    misrun = [(d, r, n) for d, r, n, _ in runs if d != r]
    assert misrun == [], "every job ran its own release's code"
    assert Counter(r for _, r, _, _ in runs) == {"r1": 100, "r2": 200}
    assert client.xlen("jobs:dead") == 0
    client.close()


def test_a_daemon_without_the_release_leaves_its_jobs_to_one_that_has_it(
    tmp_path: Path,
    redis_server: RedisServer,
    start_pool: Callable[..., Pool],
    start_daemon: Callable[..., Daemon],
) -> None:
    hosts = [tmp_path / "without", tmp_path / "with"]
    pools = [start_pool({"pm": "static"}, name=host.name) for host in hosts]
    for host in hosts:
        deploy(host / "releases", "r1")
    deploy(hosts[1] / "releases", "r3")  # only the second host has r3
    for host, pool in zip(hosts, pools, strict=True):
        extra = ("--stream", "jobs", "--consumer", host.name, "--release-wait", "3")
        start_daemon(pool.listen, *flags(host / "releases", *extra), wait=False)
    client = redis.Redis.from_url(redis_server.url)
    wait_for(
        lambda: sum(c["cmd"] == "xreadgroup" for c in client.client_list()) >= 2, what="both daemons reading"
    )
    most_held = 0
    for n in range(200):
        client.xadd("jobs", {"payload": json.dumps({"n": n, "_asyncphp": {"release": "r3"}})})
        held = client.xpending_range("jobs", "asyncphp", "-", "+", 1000, consumername="without")
        most_held = max(most_held, len(held))
    wait_for(
        lambda: len(ran(pools[1])) + client.xlen("jobs:dead") >= 200, timeout=60, what="every job settled"
    )
    wait_for(lambda: client.xpending("jobs", "asyncphp")["pending"] == 0, what="nothing pending")
    # The host without r3 holds no more of its jobs than its pool could run (5), and gives up only those.
    assert most_held <= 5, most_held
    assert client.xlen("jobs:dead") <= 5
    assert sorted(n for _, _, n, _ in ran(pools[1])) == sorted(set(range(200)) - dead_ns(client))
    client.close()


def dead_ns(client: redis.Redis) -> set[int]:
    return {json.loads(letter[b"payload"])["n"] for _, letter in client.xrange("jobs:dead")}


def test_a_release_removed_after_it_was_found_makes_its_jobs_wait_not_fail(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    root = tmp_path / "releases"
    deploy(root, "r2")
    url = redis_server.url
    daemon = start_daemon(pool.listen, *flags(root, "--stream", "jobs", "--release-wait", "30"), wait=False)
    wait_for(lambda: daemon.lines("Subscribed to stream jobs"), what="the daemon")
    enqueue({"n": 1}, stream="jobs", redis_url=url, release="r2")
    wait_for(lambda: ran(pool), what="the first job")
    shutil.rmtree(root / "r2")  # pruned by a deploy, while the daemon still has it as found
    enqueue({"n": 2}, stream="jobs", redis_url=url, release="r2")
    daemon.wait_for("release r2 is gone from this host")
    deploy(root, "r2")
    wait_for(lambda: len(ran(pool)) == 2, what="the second job, once r2 is back")
    with redis.Redis.from_url(url) as client:
        assert client.xlen("jobs:dead") == 0


def test_pub_sub_jobs_waiting_for_a_release_are_bounded_and_leave_the_streams_read_room(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 2): every pub/sub job of a missing release waited, whatever
    # max_queued, and each took a stream entry's read room: with 30 waiting, the stream was not read.
    url = redis_server.url
    daemon, client = with_r1(
        tmp_path, pool, start_daemon, url, "--stream", "jobs", "--release-wait", "600", "--max-queued", "10",
        "--heartbeat-interval", "0.2",
    )  # fmt: skip
    daemon.wait_for("Subscribed to stream jobs")
    publish_many(url, "r9", range(30))  # never deployed
    heartbeat = client.keys(DAEMON_PREFIX + "*")[0]
    wait_for(lambda: client.hget(heartbeat, "releases_waiting") == b"r9=10", what="ten jobs waiting for r9")
    for n in range(100, 120):
        enqueue({"n": n}, stream="jobs", redis_url=url, release="r1")
    wait_for(lambda: len(ran(pool)) == 20, what="the stream's 20 jobs, read while r9's wait")
    assert sorted(n for _, _, n, _ in ran(pool)) == list(range(100, 120))
    assert client.hget(heartbeat, "releases_waiting") == b"r9=10"
    daemon.stop()
    assert "20 dropped" in daemon.lines("stopped")[-1], "the 20 beyond max_queued, each said"
    client.close()


def test_a_pub_sub_job_whose_release_never_comes_is_dropped_with_a_line_not_kept_going_round(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 2): after release_wait it went to the spill file, came back from
    # it to wait again, and so on without end, a WARNING each time.
    url = redis_server.url
    daemon, client = with_r1(
        tmp_path, pool, start_daemon, url, "--release-wait", "1", "--state-dir", str(tmp_path)
    )
    publish_many(url, "r9", range(3))
    wait_for(lambda: len(daemon.lines("not run: release r9 did not reach")) == 3, what="three jobs given up")
    publish({"n": 3}, channel="commands", redis_url=url, release="r1")
    wait_for(lambda: ran(pool), what="a job of r1, after those given up")
    daemon.stop()
    summary = daemon.lines("stopped")[-1]
    assert "3 dropped" in summary and "0 spilled" in summary and "1 completed" in summary, summary
    assert not daemon.lines("spill file"), "nothing went round through the spill file"
    client.close()


def test_jobs_of_a_release_that_is_here_run_while_a_missing_one_s_fill_max_queued(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # A review's fault run: with the waiting jobs counted against max_queued, a job that could take a
    # free slot at once was refused too ("the queue is full" with the queue empty).
    url = redis_server.url
    daemon, client = with_r1(tmp_path, pool, start_daemon, url, "--release-wait", "600", "--max-queued", "10")
    publish_many(url, "r9", range(10))
    daemon.wait_for("release r9 is not on this host")
    publish_many(url, "r1", range(100, 105))
    wait_for(lambda: len(ran(pool)) == 5, what="r1's five jobs")
    daemon.stop()
    assert "0 dropped" in daemon.lines("stopped")[-1]
    client.close()


def test_a_spill_file_does_not_go_round_while_jobs_wait_for_their_release(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # A review's fault run: with more jobs of a missing release than max_queued, the spill file's
    # replay took one, found no room for it to wait, spilled it again, and so on: 5 s of CPU in 5 s,
    # 88,030 spilled. Now the replay rests while they wait, and every message is spilled once.
    url = redis_server.url
    daemon, client = with_r1(
        tmp_path, pool, start_daemon, url, "--release-wait", "2", "--max-queued", "10",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    publish_many(url, "r9", range(30))
    publish({"n": 100}, channel="commands", redis_url=url, release="r1")  # behind them, in order
    wait_for(lambda: ran(pool), timeout=60, what="the r1 job, once r9's have been given up")
    daemon.stop()
    summary = daemon.lines("stopped")[-1]
    assert "30 dropped" in summary and "1 completed" in summary, summary
    spilled = int(re.search(r"(\d+) spilled", summary)[1])  # type: ignore[index]
    assert spilled <= 31, summary
    client.close()
