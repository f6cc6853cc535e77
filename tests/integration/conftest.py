"""Real servers for integration tests: redis-server and php-fpm started in a temp dir, stopped by PID."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, Server
from asyncphp.ops import probe
from asyncphp.settings import PoolAddress
from asyncphp.wire.keys import DAEMON_PREFIX
from tests.conftest import POOL_CONF, WORKER

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)  # poll
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def pool_status(pool: Pool) -> dict[str, Any]:
    """The pool's pm.status_path page (commands.conf sets it), which php-fpm answers itself. This
    request is counted in its "accepted conn", and is one of its "active processes"."""
    response = probe.get(PoolAddress.parse(pool.listen), "/asyncphp-status", "json")
    page: dict[str, Any] = json.loads(response.head.partition(b"\r\n\r\n")[2])
    return page


def heartbeat_counter(client: redis.Redis, name: str) -> int:
    """A counter (``received``, ``completed`` …) of the daemon's last heartbeat in Redis; 0 before
    the first. The heartbeat is written in a turn of the loop after the one that counted."""
    keys = client.keys(DAEMON_PREFIX + "*")
    return max((int(client.hget(key, name) or 0) for key in keys), default=0)


class Daemon:
    """An asyncphp daemon process whose log the test can wait on."""

    def __init__(self, server: Server, log: Path) -> None:
        self.server = server
        self.log = log

    def lines(self, pattern: str = "") -> list[str]:
        return [line for line in lines(self.log) if re.search(pattern, line)]

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        def found() -> list[str]:
            matched = self.lines(pattern)
            if len(matched) < count and self.server.process.poll() is not None:
                pytest.fail(f"daemon exited with {self.server.process.returncode}:\n{self.log.read_text()}")
            return matched if len(matched) >= count else []

        result = wait_for(found, timeout, f"{count} log line(s) matching {pattern!r}")
        assert isinstance(result, list)
        return result

    def stop(self) -> int:
        return self.server.stop()


def notifications(sock: socket.socket, until: str) -> list[str]:
    """sd_notify datagrams received up to and including the first one holding ``until``."""
    received: list[str] = []
    while not received or until not in received[-1]:
        received.append(sock.recv(4096).decode())
    return received


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A real AF_UNIX datagram socket to give the daemon as NOTIFY_SOCKET, as systemd does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    yield sock
    sock.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = sandbox.start_redis(workdir)
    yield server
    server.stop()


@pytest.fixture
def start_pool(tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    started: list[Pool] = []

    def start(overrides: Mapping[str, str | None] | None = None, name: str = "pool") -> Pool:
        pool = sandbox.start_pool(tmp_path / name, POOL_CONF, overrides)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.stop()


@pytest.fixture
def pool(start_pool: Callable[..., Pool]) -> Pool:
    return start_pool()


@pytest.fixture
def start_daemon(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(
        pool_socket: str | Path,
        *extra: str,
        worker: Path = WORKER,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> Daemon:
        log = tmp_path / f"daemon-{len(started)}.log"
        client = redis.Redis.from_url(redis_server.url)
        subscribers = len(client.client_list(_type="pubsub"))
        server = sandbox.start_daemon(redis_server.url, str(pool_socket), worker, *extra, log=log, env=env)
        daemon = Daemon(server, log)
        started.append(daemon)
        if wait:
            # Asked of Redis rather than read from the log, which may be quiet (--log-level).
            def subscribed() -> bool:
                if server.process.poll() is not None:
                    pytest.fail(f"daemon exited with {server.process.returncode}:\n{log.read_text()}")
                return len(client.client_list(_type="pubsub")) > subscribers

            wait_for(subscribed, what="the daemon to subscribe")
        client.close()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
