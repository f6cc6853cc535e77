"""Sentinel on loopback: a primary, a replica and one Sentinel; the primary stops, the replica is
promoted, and the daemon follows it through the redis+sentinel:// URL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from asyncphp.caller import enqueue
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, Server, free_port
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for

STREAM_WORKER = PHP_DIR / "stream.php"


class Group:
    def __init__(
        self, primary: RedisServer, replica: RedisServer, sentinel: Server, sentinel_port: int
    ) -> None:
        self.primary, self.replica, self.sentinel, self.sentinel_port = (
            primary,
            replica,
            sentinel,
            sentinel_port,
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/mymaster"

    def master_port(self) -> int:
        with redis.Redis("127.0.0.1", self.sentinel_port, socket_timeout=1) as client:
            return int(client.sentinel_get_master_addr_by_name("mymaster")[1])


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[Group]:
    for name in ("primary", "replica", "sentinel"):
        (tmp_path / name).mkdir()
    primary = sandbox.start_redis(tmp_path / "primary")
    replica = sandbox.start_redis(tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port)))
    sentinel: Server | None = None
    try:
        # The replica in sync before the Sentinel starts: Sentinel learns a master's replicas from
        # its INFO, which it asks for at once and then every 10 s; a replica that came up between
        # the two was found only up to 10 s later (over 20 s, with the handshake, in a fresh
        # container).
        with redis.Redis.from_url(primary.url) as client:

            def in_sync() -> bool:
                info = client.info("replication")
                return info["connected_slaves"] == 1 and info["slave0"]["state"] == "online"

            wait_for(in_sync, what="the replica to sync")
        port = free_port()
        conf = tmp_path / "sentinel" / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path / 'sentinel'}\n"
            f"sentinel monitor mymaster 127.0.0.1 {primary.port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"
        )
        log = tmp_path / "sentinel" / "sentinel.log"
        process = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel", "--logfile", str(log)], stdin=subprocess.DEVNULL
        )
        sentinel = Server("sentinel", process, log)
        group = Group(primary, replica, sentinel, port)

        def sentinel_knows_replica() -> bool:
            try:
                # 127.0.0.1, not localhost: a fresh Debian root has no /etc/hosts.
                with redis.Redis("127.0.0.1", port, socket_timeout=1) as client:
                    return len(client.sentinel_slaves("mymaster")) == 1
            except redis.RedisError:
                return False

        # Its first INFO finds it; two of Sentinel's 10 s periods are the most it could take.
        wait_for(sentinel_knows_replica, timeout=25, what="the sentinel to find the replica")
        yield group
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.stop()
        primary.stop()


def add(url: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        deadline = time.monotonic() + 20
        while True:
            try:
                enqueue({"n": i}, stream="jobs", redis_url=url)
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # poll: until the failover lets the publish through


def test_the_daemon_follows_a_failover(
    sentinel_group: Group, pool: Pool, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    log = tmp_path / "sentinel-daemon.log"
    flags = ("--stream", "jobs", "--claim-idle", "2")
    daemon = Daemon(
        sandbox.start_daemon(sentinel_group.url, pool.listen, STREAM_WORKER, *flags, log=log), log
    )
    try:
        daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{sentinel_group.primary.port}")
        add(sentinel_group.url, 0, 100)
        wait_for(lambda: len(lines(pool.worker_log)) >= 100, what="the first 100 jobs")

        started = time.monotonic()
        sentinel_group.primary.stop()
        daemon.wait_for("lost the connection to redis")
        wait_for(
            lambda: sentinel_group.master_port() == sentinel_group.replica.port, timeout=30, what="promotion"
        )
        daemon.wait_for(rf"Connected to redis on 127\.0\.0\.1:{sentinel_group.replica.port}", timeout=30)
        followed = time.monotonic() - started
        add(sentinel_group.url, 100, 100)
        wait_for(
            lambda: {int(line.split()[0]) for line in lines(pool.worker_log)} >= set(range(200)),
            timeout=30, what="every job, before and after the failover",
        )  # fmt: skip
        assert daemon.server.process.poll() is None
        print(f"\nsentinel failover: on the promoted replica {followed:.1f} s after the primary stopped")
    finally:
        daemon.stop()
