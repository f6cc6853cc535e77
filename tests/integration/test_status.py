"""asyncphp status: heartbeats of live daemons across hosts, and one that died disappearing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

from asyncphp.caller import publish
from asyncphp.dev.sandbox import Pool, RedisServer
from tests.integration.conftest import Daemon, wait_for


def status(url: str, pool: Pool, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncphp", "status", "--config", "/dev/null", "--redis-url", url,
         "--fpm-socket", pool.listen, *extra],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_two_daemons_two_rows_then_one(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pools = [start_pool(name=f"host{i}") for i in (1, 2)]
    daemons = [
        start_daemon(p.listen, "--consumer", f"host{i + 1}", "--heartbeat-interval", "0.3")
        for i, p in enumerate(pools)
    ]
    for i in range(6):
        assert publish({"timestamp": f"t{i}"}, redis_url=redis_server.url) == 2  # pub/sub: both run it
    for daemon in daemons:
        daemon.wait_for("status 200", count=6)

    def both_counted() -> dict[str, object] | None:
        data = json.loads(status(redis_server.url, pools[0], "--json").stdout)
        rows = {d["name"]: d for d in data["daemons"]}
        if set(rows) == {"host1", "host2"} and all(r["dispatched"] == 6 for r in rows.values()):
            return data
        return None

    data = wait_for(both_counted, what="two rows with live counters")
    assert isinstance(data, dict)
    assert data["totals"]["dispatched"] == 12
    assert data["pool"]["idle_processes"] + data["pool"]["active_processes"] >= 1

    table = status(redis_server.url, pools[0]).stdout
    print("\n" + table)
    assert table.splitlines()[0].split()[:3] == ["DAEMON", "HOST", "UP"]
    assert "total: 2 daemon(s)" in table and "pool " in table and "listen queue" in table

    daemons[1].server.process.kill()  # no clean stop: its key has to expire
    started = time.monotonic()

    def one_left() -> bool:
        data = json.loads(status(redis_server.url, pools[0], "--json").stdout)
        return [d["name"] for d in data["daemons"]] == ["host1"]

    wait_for(one_left, timeout=10, what="the killed daemon's row to expire")
    gone = time.monotonic() - started
    print(f"killed daemon gone from status after {gone:.1f} s (heartbeat 0.3 s, expiry 0.9 s)")


def test_stream_lag_and_dead_letters(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.xadd("jobs:dead", {"id": "0-1", "payload": "{}", "reason": "test"})
    start_daemon(pool.listen, "--stream", "jobs", "--heartbeat-interval", "0.3", wait=False)
    wait_for(
        lambda: "stream jobs: group asyncphp" in status(redis_server.url, pool).stdout, what="the stream line"
    )
    line = next(x for x in status(redis_server.url, pool).stdout.splitlines() if x.startswith("stream jobs"))
    assert "lag 0" in line and "1 dead letter(s)" in line
    client.close()
