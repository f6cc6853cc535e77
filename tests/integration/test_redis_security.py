"""Redis with a password (in the URL or from systemd's credentials directory), an ACL user, TLS."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncphp.caller import publish
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, Server, free_port
from tests.conftest import WORKER, self_signed
from tests.integration.conftest import Daemon, wait_for


def run_daemon(tmp_path: Path, url: str, pool: Pool, env: dict[str, str] | None = None) -> Daemon:
    log = tmp_path / "daemon.log"
    daemon = Daemon(sandbox.start_daemon(url, pool.listen, WORKER, log=log, env=env), log)
    daemon.wait_for("Subscribed to commands")
    return daemon


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "secured").mkdir()
    server = sandbox.start_redis(
        tmp_path / "secured",
        extra=("--requirepass", "s3cret", "--user", "jobs", "on", ">jobs-pw", "~*", "&*", "+@all"),
    )
    yield server
    server.stop()


def test_password_from_a_credentials_file(tmp_path: Path, secured_redis: RedisServer, pool: Pool) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis-password").write_text("s3cret\n")
    daemon = run_daemon(tmp_path, secured_redis.url, pool, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        assert (
            publish({"timestamp": "authenticated"}, redis_url=f"redis://:s3cret@{secured_redis.url[8:]}") == 1
        )
        daemon.wait_for("job 1 on commands: status 200")
        assert "s3cret" not in daemon.log.read_text()
    finally:
        daemon.stop()


def test_acl_user_in_the_url_is_never_logged(tmp_path: Path, secured_redis: RedisServer, pool: Pool) -> None:
    url = f"redis://jobs:jobs-pw@127.0.0.1:{secured_redis.port}/0"
    daemon = run_daemon(tmp_path, url, pool)
    try:
        assert publish({"timestamp": "as jobs"}, redis_url=url) == 1
        daemon.wait_for("job 1 on commands: status 200")
        secured_redis.stop()
        daemon.wait_for("cannot connect to redis at redis://jobs:\\*\\*\\*@127.0.0.1")
        assert "jobs-pw" not in daemon.log.read_text()
    finally:
        daemon.stop()


def test_wrong_password_is_reported_and_retried(
    tmp_path: Path, secured_redis: RedisServer, pool: Pool
) -> None:
    url = f"redis://:wrong@127.0.0.1:{secured_redis.port}/0"
    log = tmp_path / "daemon.log"
    daemon = Daemon(sandbox.start_daemon(url, pool.listen, WORKER, log=log), log)
    try:
        line = daemon.wait_for("ERROR cannot connect to redis at redis://:\\*\\*\\*@", count=2)[0]
        assert "WRONGPASS" in line or "invalid username-password" in line
    finally:
        daemon.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    certs = tmp_path / "tls"
    key, cert = self_signed(certs)
    port = free_port()
    log = certs / "redis.log"
    args = [
        "redis-server", "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
        "--dir", str(certs), "--logfile", str(log),
    ]  # fmt: skip
    server = Server("redis-tls", subprocess.Popen(args, stdin=subprocess.DEVNULL), log)
    try:
        wait_for(
            lambda: log.exists() and "Ready to accept connections" in log.read_text(), what="redis over TLS"
        )
        yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", cert
    finally:
        server.stop()


def test_tls_through_a_rediss_url(tmp_path: Path, tls_redis: tuple[str, Path], pool: Pool) -> None:
    url, _ = tls_redis
    daemon = run_daemon(tmp_path, url, pool)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "asyncphp.caller", "--redis-url", url, "timestamp=over tls"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        daemon.wait_for("job 1 on commands: status 200")
    finally:
        daemon.stop()


def test_tls_with_an_untrusted_certificate_is_refused(
    tmp_path: Path, tls_redis: tuple[str, Path], pool: Pool
) -> None:
    url, _ = tls_redis
    untrusted = url.split("?")[0]  # the system CAs do not know this self-signed certificate
    log = tmp_path / "daemon.log"
    daemon = Daemon(sandbox.start_daemon(untrusted, pool.listen, WORKER, log=log), log)
    try:
        line = daemon.wait_for("ERROR cannot connect to redis at rediss://")[0]
        assert "certificate verify failed" in line
    finally:
        daemon.stop()


def test_status_and_dead_use_the_password_file(tmp_path: Path, secured_redis: RedisServer) -> None:
    password = tmp_path / "redis-password"
    password.write_text("s3cret\n")
    config = tmp_path / "daemon.toml"
    config.write_text(f'redis_url = "{secured_redis.url}"\nredis_password_file = "{password}"\n')
    for command in (["status", "--json"], ["dead", "--stream", "jobs", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "asyncphp", *command[:1], "--config", str(config), *command[1:]],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)
