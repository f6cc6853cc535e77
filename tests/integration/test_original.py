"""The original design's own test, on real servers: ten caller runs → ten timestamps."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable

from asyncphp.dev.sandbox import Pool, RedisServer
from tests.integration.conftest import Daemon, lines, wait_for


def test_ten_caller_runs_reach_the_worker(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    # The shipped idle timeout is 10 s; 2 s lets the test see children go without waiting that long.
    pool = start_pool({"pm.process_idle_timeout": "2s"})
    # DEBUG adds the original's "Spawned process" line when a job is sent (at INFO: one line, at its end).
    daemon = start_daemon(pool.listen, "--log-level", "DEBUG")
    assert pool.children() == [], "ondemand: no child before the first job"

    started = time.monotonic()
    for _ in range(10):
        done = subprocess.run(
            [sys.executable, "-m", "asyncphp.caller", "--redis-url", redis_server.url],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr

    peak = wait_for(lambda: len(pool.children()), what="a pool child")
    wait_for(lambda: len(lines(pool.worker_log)) == 10, what="ten lines in the worker log")
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", line) for line in lines(pool.worker_log)
    )

    daemon.wait_for(r"job \d+ on commands: status 200", count=10)
    print(f"\noriginal's test: ten jobs finished {time.monotonic() - started:.2f} s after the first publish")
    assert len(daemon.lines(r"Spawned process with ID: \d+")) == 10
    assert not daemon.lines("ERROR|WARNING")

    access = wait_for(lambda: len(lines(pool.access_log)) == 10 and lines(pool.access_log), what="access log")
    assert isinstance(access, list)
    assert all(re.search(r" POST /worker\.php 200 .* on commands release -$", line) for line in access)

    assert isinstance(peak, int) and 1 <= peak <= 5
    wait_for(lambda: pool.children() == [], timeout=10, what="idle children to exit")
