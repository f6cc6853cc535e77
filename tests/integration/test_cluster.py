"""Redis Cluster on loopback: six nodes (three primaries, one replica each) made by redis-cli.

The daemon reads partitions spread over the shards, each from its own primary; sharded pub/sub
from the shard that owns each channel; it follows a primary killed under a steady publish, and
a slot migrated while it reads, and loses nothing (counted).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from asyncphp import redisurl
from asyncphp.caller import enqueue, partition, publish
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Cluster, Pool
from tests.conftest import PHP_DIR, self_signed
from tests.integration.conftest import Daemon, lines, wait_for

STREAM_WORKER = PHP_DIR / "stream.php"
PARTITIONS = [f"commands{{{i}}}" for i in range(4)]


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """For tests that neither kill nor move anything."""
    cluster = sandbox.start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """For a test that kills a node or migrates a slot."""
    cluster = sandbox.start_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(url: str, pool: Pool, *flags: str, worker: Path = STREAM_WORKER) -> Daemon:
        log = tmp_path / f"daemon-{len(started)}.log"
        daemon = Daemon(sandbox.start_daemon(url, pool.listen, worker, *flags, log=log), log)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def ran(pool: Pool) -> list[int]:
    return [int(line.split()[0]) for line in lines(pool.worker_log) if line.split()[0].isdigit()]


def stream_flags(*streams: str) -> tuple[str, ...]:
    return tuple(flag for stream in streams for flag in ("--stream", stream))


def test_partitions_spread_over_the_shards_and_each_is_read_from_its_primary(
    shared_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    primaries = {shared_cluster.owner(stream) for stream in PARTITIONS}
    assert len(primaries) == 3  # the four tags land on all three shards
    daemon = start_daemon(shared_cluster.url, pool, *stream_flags(*PARTITIONS), "--group", "spread")
    for port in primaries:
        daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{port} .*for stream commands\{{")
    daemon.wait_for("Subscribed to stream commands", count=4)
    chosen = [partition("commands", 4, key=f"customer-{i}") for i in range(200)]
    for i, stream in enumerate(chosen):
        enqueue({"n": i}, stream=stream, redis_url=shared_cluster.url)
    wait_for(lambda: sorted(ran(pool)) == list(range(200)), what="all 200 jobs, once each")
    with redisurl.client(shared_cluster.url) as rc:
        for stream in PARTITIONS:
            assert rc.xlen(stream) == chosen.count(stream) > 0
            pending = rc.xpending(stream, "spread")["pending"]
            assert pending == 0, f"{stream}: {pending} left pending"
    assert partition("commands", 4, key="customer-7") == partition("commands", 4, key="customer-7")


def test_scheduling_dead_letters_and_the_tools_work_on_a_cluster(
    shared_cluster: Cluster, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    url = shared_cluster.url
    pool = start_pool(name="tools-pool")
    stream = "{tools}"
    daemon = start_daemon(url, pool, "--stream", stream, "--group", "tools", "--max-attempts", "1")
    daemon.wait_for(r"Subscribed to stream \{tools\}")
    delayed = enqueue({"n": 1}, stream=stream, redis_url=url, delay=0.3)
    assert delayed.id.startswith("d") and delayed.due_at is not None
    # Held until it expires, not only until the first is settled (which may be at once).
    first = enqueue({"n": 2}, stream=stream, redis_url=url, unique_key="once", unique_until="expiry")
    second = enqueue({"n": 3}, stream=stream, redis_url=url, unique_key="once", unique_until="expiry")
    assert first.added and not second.added
    enqueue({"n": 4, "status": 422}, stream=stream, redis_url=url)
    wait_for(lambda: sorted(ran(pool)) == [1, 2], what="the delayed job and the unique one")
    daemon.wait_for(r"dead-lettered to \{tools\}:dead")

    def tool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "asyncphp", *args], capture_output=True, text=True, timeout=60, check=False
        )

    dead = tool("dead", "--redis-url", url, "--stream", stream, "list")
    assert dead.returncode == 0, dead.stderr
    assert "status 422" in dead.stdout and "1 dead letter(s)" in dead.stderr
    status = tool("status", "--redis-url", url, "--stream", stream, "--group", "tools", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["streams"][stream]["dead_letters"] == 1
    assert any(stream in d.get("streams", "") for d in data["daemons"]), data["daemons"]
    check = tool(
        "check", "--redis-url", url, "--stream", stream, "--group", "tools", "--fpm-socket", pool.listen,
        "--worker-script", str(STREAM_WORKER),
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # The scripts of the tools, on the stream's shard: a delayed unique job cancelled with its
    # guard, another run now, the dead letter replayed, then purged.
    later = enqueue({"n": 5}, stream=stream, redis_url=url, delay=3600, unique_key="later")
    soon = enqueue({"n": 6}, stream=stream, redis_url=url, delay=3600)
    listed = tool("delayed", "--redis-url", url, "--stream", stream, "list")
    assert listed.returncode == 0, listed.stderr
    assert later.id in listed.stdout and soon.id in listed.stdout and "2 delayed job(s)" in listed.stderr
    cancelled = tool("delayed", "--redis-url", url, "--stream", stream, "cancel", later.id)
    assert cancelled.returncode == 0 and f"{later.id} cancelled" in cancelled.stdout, cancelled.stderr
    assert enqueue({"n": 7}, stream=stream, redis_url=url, delay=3600, unique_key="later").added, "guard gone"
    now = tool("delayed", "--redis-url", url, "--stream", stream, "run-now", soon.id)
    assert now.returncode == 0, now.stderr
    wait_for(lambda: 6 in ran(pool), what="the delayed job run now")
    replayed = tool("dead", "--redis-url", url, "--stream", stream, "replay", "--all")
    assert replayed.returncode == 0 and "→ {tools}" in replayed.stdout, replayed.stderr
    daemon.wait_for(r"dead-lettered to \{tools\}:dead", count=2)  # 422 again: dead again
    purged = tool("dead", "--redis-url", url, "--stream", stream, "purge", "--all")
    assert purged.returncode == 0 and "purged 1 dead letter(s)" in purged.stderr, purged.stderr  # the new one


def test_sharded_pubsub_reads_each_channel_from_its_shard(
    shared_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    channels = ["alerts{0}", "alerts{1}", "alerts{3}"]  # three slots on three primaries
    assert len({shared_cluster.owner(c) for c in channels}) == 3
    flags = [flag for c in channels for flag in ("--channel", c)]
    daemon = start_daemon(shared_cluster.url, pool, *flags, worker=STREAM_WORKER)
    daemon.wait_for(r"Subscribed to alerts\{", count=3)
    for i, channel in enumerate(channels * 10):
        assert publish({"n": i}, channel=channel, redis_url=shared_cluster.url) == 1
    wait_for(lambda: sorted(ran(pool)) == list(range(30)), what="30 messages over three shards")
    assert publish({"n": 99}, channel="nobody{0}", redis_url=shared_cluster.url) == 0  # as on one server
    classic = shared_cluster.url + "?pubsub=classic"
    other = start_daemon(classic, pool, "--channel", "broadcast")
    other.wait_for("Subscribed to broadcast")
    assert publish({"n": 30}, channel="broadcast", redis_url=classic) == 1  # at the channel's primary
    wait_for(lambda: 30 in ran(pool), what="the classic publish")
    # A plain PUBLISH at any other node (an app that knows nothing of the cluster) is broadcast
    # over the cluster bus to the daemon; that node counts only its own subscribers.
    elsewhere = next(n.port for n in shared_cluster.nodes if n.port != shared_cluster.owner("broadcast"))
    with redis.Redis("127.0.0.1", elsewhere) as node:
        assert node.publish("broadcast", json.dumps({"n": 31})) == 0
    wait_for(lambda: 31 in ran(pool), what="the PUBLISH at another node")


@pytest.mark.parametrize("kind", ["phpredis-cluster", "predis-cluster"])
def test_the_php_client_publishes_on_a_cluster_and_refuses_an_untagged_stream(
    shared_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon], kind: str
) -> None:
    # phpredis's RedisCluster and Predis's cluster client (which routes neither XADD nor PUBLISH
    # itself, nor SCRIPT LOAD at all): jobs, delayed and unique ones through the add script, land
    # on the shard of their stream's tag, and a channel's message on its shard (sharded pub/sub).
    stream, channel = f"{{php}}{kind}", f"news{{{kind}}}"
    daemon = start_daemon(shared_cluster.url, pool, "--stream", stream, "--channel", channel, "--group", kind)
    daemon.wait_for(f"Subscribed to stream {re.escape(stream)}")
    daemon.wait_for(f"Subscribed to {re.escape(channel)}")
    seeds = shared_cluster.url.removeprefix("redis+cluster://").rstrip("/")
    calls = [
        {"op": "stream", "stream": "mail", "payload": {"n": 0}},
        {"op": "stream", "stream": stream, "payload": {"n": 1}},
        {"op": "stream", "stream": stream, "payload": {"n": 2}, "delay": 0.2},
        {"op": "stream", "stream": stream, "payload": {"n": 3}, "unique": ["u", 60]},
        {"op": "stream", "stream": stream, "payload": {"n": 4}, "unique": ["u", 60]},
        {"op": "publish", "channel": channel, "payload": {"n": 5}},
    ]
    done = subprocess.run(
        ["php", str(PHP_DIR / "client_calls.php"), kind, seeds, json.dumps(calls)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    untagged, plain, delayed, unique, again, published = replies
    assert "stream 'mail' needs a hash tag" in untagged["error"] and "name it {mail}" in untagged["error"]
    assert delayed["result"]["id"].startswith("d")
    assert again["result"] == {**unique["result"], "added": False}, "the duplicate got the first one's id"
    assert published == {"result": 1}, "the daemon's sharded subscription received it"
    wait_for(lambda: sorted(ran(pool)) == [1, 2, 3, 5], what="each job once; the duplicate and 'mail' never")
    assert plain["result"]["id"] in {line.split()[1] for line in lines(pool.worker_log)}
    with redisurl.client(shared_cluster.url) as rc:
        assert rc.exists("mail") == 0


class Publisher(threading.Thread):
    """Adds jobs n = start … stop - 1 to ``stream`` as fast as the cluster takes them, each again
    until accepted (through a failover or a migration), within a bound; counts what was accepted."""

    def __init__(self, url: str, stream: str, start: int, stop: int) -> None:
        super().__init__(daemon=True)
        self.url, self.stream, self.numbers = url, stream, range(start, stop)
        self.accepted: list[int] = []
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        # One client, as an app keeps one: it follows MOVED and asks the cluster again after a
        # failover (a new client per add would also try a hung seed first, every time).
        client = redisurl.client(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            deadline = time.monotonic() + 60
            for n in self.numbers:
                while True:
                    try:
                        enqueue({"n": n}, stream=self.stream, redis_url=self.url, client=client)
                        break
                    except redis.RedisError:
                        self.retries += 1
                        if time.monotonic() > deadline:
                            raise
                self.accepted.append(n)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            client.close()


def reading_under_publish(
    start_daemon: Callable[..., Daemon],
    url: str,
    pool: Pool,
    stream: str,
    channel: str,
    jobs: int,
    before: int,
) -> tuple[Daemon, Publisher]:
    """A daemon reading ``stream`` and subscribed to ``channel``, a Publisher adding ``jobs`` to the
    stream, and ``before`` of them run: the fault comes next."""
    daemon = start_daemon(url, pool, "--stream", stream, "--channel", channel, "--claim-idle", "2")
    daemon.wait_for(rf"Subscribed to stream {re.escape(stream)}")
    daemon.wait_for(rf"Subscribed to {re.escape(channel)}")
    publisher = Publisher(url, stream, 0, jobs)
    publisher.start()
    wait_for(lambda: len(ran(pool)) >= before, what=f"{before} jobs before the fault")
    return daemon, publisher


def test_a_primary_killed_under_a_steady_publish_loses_nothing_and_the_daemon_follows(
    own_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    url, stream, channel = own_cluster.url, "{orders}", "{orders}alerts"
    primary = own_cluster.owner(stream)
    replica = own_cluster.replica_of(primary)
    daemon, publisher = reading_under_publish(start_daemon, url, pool, stream, channel, jobs=600, before=150)
    killed = time.monotonic()
    own_cluster.node(primary).process.kill()
    own_cluster.node(primary).process.wait()
    wait_for(lambda: own_cluster.is_primary(replica), timeout=30, what="the replica's promotion")
    promoted = time.monotonic() - killed
    daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{replica} .*for stream \{{orders\}}", timeout=30)
    daemon.wait_for(r"Resubscribed to \{orders\}alerts after", timeout=30)
    followed = time.monotonic() - killed
    publisher.join(timeout=90)
    assert publisher.error is None, publisher.error
    assert not publisher.is_alive()
    accepted = set(publisher.accepted)
    assert accepted == set(range(600))
    wait_for(lambda: set(ran(pool)) >= accepted, timeout=30, what="every accepted job")
    # Pub/sub again, on the promoted replica: published once the daemon subscribed there.
    assert publish({"n": 1000}, channel=channel, redis_url=url) == 1
    wait_for(lambda: 1000 in ran(pool), what="the message published after the failover")
    assert daemon.server.process.poll() is None
    runs = ran(pool)
    print(
        f"\ncluster failover: replica primary {promoted:.1f} s after the kill, daemon on it after "
        f"{followed:.1f} s; {len(accepted)} jobs accepted, 0 lost, {len(runs) - len(set(runs))} ran twice, "
        f"{publisher.retries} adds retried"
    )


def test_a_slot_migrated_while_it_is_read_loses_nothing(
    own_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    url, stream, channel = own_cluster.url, "{moving}", "{moving}news"
    slot = redisurl.slot(stream)
    source = own_cluster.owner(stream)
    view = {node.port: node for node in own_cluster.view()}
    target = next(port for port, node in view.items() if node.primary and port != source)
    source_id, target_id = view[source].id, view[target].id
    daemon, publisher = reading_under_publish(start_daemon, url, pool, stream, channel, jobs=400, before=100)
    with redis.Redis("127.0.0.1", source) as a, redis.Redis("127.0.0.1", target) as b:
        b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for _ in range(100):  # bounded: the slot holds a handful of keys
            keys = a.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            a.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for node in (b, a):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    assert own_cluster.owner(stream) == target
    daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{target} .*for stream \{{moving\}}", timeout=30)
    publisher.join(timeout=90)
    assert publisher.error is None, publisher.error
    accepted = set(publisher.accepted)
    assert accepted == set(range(400))
    wait_for(lambda: set(ran(pool)) >= accepted, timeout=30, what="every accepted job")

    def published_on_the_new_shard() -> bool:
        return publish({"n": 1000}, channel=channel, redis_url=url) == 1  # 0 until resubscribed there

    wait_for(published_on_the_new_shard, what="the daemon's subscription on the slot's new primary")
    wait_for(lambda: 1000 in ran(pool), what="the message published after the migration")
    with redis.Redis("127.0.0.1", target) as b:
        assert b.xpending(stream, "asyncphp")["pending"] == 0
    runs = ran(pool)
    print(f"\nslot migration: 400 accepted, 0 lost, {len(runs) - len(set(runs))} ran twice")


def test_tls_and_an_acl_user_on_every_node(
    tmp_path: Path, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    certs = tmp_path / "tls"
    key, cert = self_signed(certs)
    # What docs/cluster.md asks of a daemon's user on a cluster: its streams' keys, the heartbeats, the
    # delayed-job channel, CLIENT ID/UNBLOCK, and no dangerous command but those.
    user = (
        "--user", "app", "on", ">app-pw", "~{secure}*", "~asyncphp:*", "&{secure}:delayed", "+@all",
        "-@dangerous", "+client|id", "+client|unblock",
    )  # fmt: skip
    cluster = sandbox.start_cluster(tmp_path / "cluster", extra=user, tls=(cert, key))
    try:
        url = cluster.url.replace("rediss+cluster://", "rediss+cluster://app:app-pw@")
        port = cluster.owner("{secure}")  # a TLS port: asked over TLS, the cluster names those
        daemon = start_daemon(url, pool, "--stream", "{secure}")
        daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{port} .*for stream \{{secure\}}")
        daemon.wait_for(r"Subscribed to stream \{secure\}")
        for n in range(3):
            enqueue({"n": n}, stream="{secure}", redis_url=url)
        enqueue({"n": 3}, stream="{secure}", redis_url=url, delay=0.2)
        wait_for(lambda: sorted(ran(pool)) == [0, 1, 2, 3], what="the jobs over TLS, as app")
        text = daemon.log.read_text()
        assert "app-pw" not in text and "rediss+cluster://app:***@" not in text  # nothing to say
        assert " ERROR " not in text, text
        password_file = tmp_path / "redis-password"
        password_file.write_text("app-pw\n")
        by_file = cluster.url.replace("rediss+cluster://", "rediss+cluster://app@")
        second = start_daemon(
            by_file, pool, "--stream", "{secure}", "--redis-password-file", str(password_file)
        )
        second.wait_for(r"Subscribed to stream \{secure\}")  # its group created as app, on that node
        assert second.stop() == 0
        untrusted = url.split("?")[0]  # the system CAs do not know this certificate
        refused = start_daemon(untrusted, pool, "--stream", "{secure}")
        assert "certificate verify failed" in refused.wait_for("ERROR cannot connect to redis at rediss")[0]
        assert "app-pw" not in refused.log.read_text()
    finally:
        cluster.stop()


def test_a_classic_subscription_follows_a_graceful_failover(
    own_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    """Redis ends no classic subscription when its node is demoted: the daemon sees the slot's new
    primary in the cluster's map and subscribes there, where the caller publishes (and counts)."""
    url, channel = own_cluster.url + "?pubsub=classic", "news"
    primary = own_cluster.owner(channel)
    replica = own_cluster.replica_of(primary)
    daemon = start_daemon(url, pool, "--channel", channel)
    daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{primary} .*for news")
    daemon.wait_for("Subscribed to news")
    assert publish({"n": 1}, channel=channel, redis_url=url) == 1
    with redis.Redis("127.0.0.1", replica) as node:
        node.execute_command("CLUSTER", "FAILOVER")
    wait_for(lambda: own_cluster.owner(channel) == replica, what="the replica's promotion")
    daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{replica} .*for news")
    wait_for(lambda: publish({"n": 2}, channel=channel, redis_url=url) == 1, what="a count of 1 again")
    wait_for(lambda: 2 in ran(pool), what="the message published after the failover")


def test_a_hung_primary_is_left_for_its_promoted_replica(
    own_cluster: Cluster, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    """SIGSTOP: the primary's connections stay open and silent. With PINGs a minute apart, only the
    cluster's map can tell the daemon to move on."""
    url, stream = own_cluster.url, "{hung}"
    primary = own_cluster.owner(stream)
    replica = own_cluster.replica_of(primary)
    daemon = start_daemon(url, pool, "--stream", stream, "--redis-health-interval", "60", "--claim-idle", "2")
    daemon.wait_for(r"Subscribed to stream \{hung\}")
    publisher = Publisher(url, stream, 0, 300)
    publisher.start()
    hung = own_cluster.node(primary).process
    wait_for(lambda: len(ran(pool)) >= 50, what="50 jobs before the primary hangs")
    hung.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: own_cluster.owner(stream) == replica, timeout=30, what="the replica's promotion")
        daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{replica} .*for stream \{{hung\}}", timeout=30)
        publisher.join(timeout=90)
        assert publisher.error is None, publisher.error
        assert set(publisher.accepted) == set(range(300))
        wait_for(lambda: set(ran(pool)) >= set(range(300)), timeout=30, what="every accepted job")
    finally:
        hung.send_signal(signal.SIGCONT)
    daemon.wait_for("the cluster serves its slot from another primary now")


def test_a_slot_map_no_node_answers_is_not_asked_again_at_once(tmp_path: Path) -> None:
    """Seeds that accept and never answer (hung, or a black hole) hold whoever asks for the map for
    their timeout: the next ask waits, so the event loop is not held turn after turn."""
    with contextlib.ExitStack() as stack:
        seeds = []
        for _ in range(2):
            listener = stack.enter_context(socket.socket())
            listener.bind(("127.0.0.1", 0))
            listener.listen()  # connects complete in the backlog; nothing ever answers
            seeds.append(f"127.0.0.1:{listener.getsockname()[1]}")
        target = redisurl.Target(f"redis+cluster://{','.join(seeds)}/")
        with pytest.raises(redis.ConnectionError) as first:
            target.url_for("{orders}")
        assert "no node of the cluster answered CLUSTER SLOTS" in str(first.value)
        with pytest.raises(redis.ConnectionError) as second:
            target.url_for("{orders}")
        assert second.value is first.value, "said again from the failed ask, not asked again"
