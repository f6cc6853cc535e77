"""asyncphp check: one passing configuration, and one case per ✗ with its exit status and hint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, free_port
from tests.conftest import WORKER
from tests.integration.conftest import wait_for


def check(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "asyncphp", "check", "--config", "/dev/null", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def flags(url: str, pool: Pool | str, worker: Path = WORKER) -> tuple[str, ...]:
    listen = pool if isinstance(pool, str) else pool.listen
    return ("--redis-url", url, "--fpm-socket", listen, "--worker-script", str(worker))


def test_everything_in_place(redis_server: RedisServer, pool: Pool) -> None:
    done = check(*flags(redis_server.url, pool))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("✓ settings valid")
    assert any(
        line.startswith(f"✓ redis reachable at 127.0.0.1:{redis_server.port} (redis 7") for line in lines
    )
    assert any(
        line.startswith("✓ pool at") and "answers FastCGI (FCGI_MPXS_CONNS=0)" in line for line in lines
    )
    assert "✓ pool ping /asyncphp-ping: pong" in lines
    assert any(line.startswith("✓ worker") and "exists and is readable" in line for line in lines)
    assert "✗" not in done.stdout
    print("\n" + done.stdout)


def test_no_redis(pool: Pool) -> None:
    done = check(*flags(f"redis://127.0.0.1:{free_port()}/0", pool))
    assert done.returncode == 1
    assert "✗ redis at redis://127.0.0.1:" in done.stdout
    assert "hint: is redis-server running there" in done.stdout


def test_wrong_password(tmp_path: Path, pool: Pool) -> None:
    (tmp_path / "secure").mkdir()
    server = sandbox.start_redis(tmp_path / "secure", extra=("--requirepass", "right"))
    try:
        done = check(*flags(f"redis://:wrong@127.0.0.1:{server.port}/0", pool))
    finally:
        server.stop()
    assert done.returncode == 1
    assert "✗ redis at redis://:***@127.0.0.1" in done.stdout and ":wrong@" not in done.stdout
    assert "hint: wrong user or password" in done.stdout


def test_missing_socket(redis_server: RedisServer, tmp_path: Path) -> None:
    done = check(*flags(redis_server.url, str(tmp_path / "no.sock")))
    assert done.returncode == 1
    assert f"✗ pool: no socket at {tmp_path / 'no.sock'}" in done.stdout
    assert "hint: is php-fpm running with fpm-pool/commands.conf" in done.stdout


def test_socket_without_permission(redis_server: RedisServer, pool: Pool) -> None:
    os.chmod(pool.listen, 0)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # Root ignores file modes: drop the capabilities that let it, for this one command.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to test a refused socket as root")
        # From every set: a container (systemd-nspawn) gives root these in its inheritable set too,
        # which the bounding set alone would leave in place.
        caps = "-dac_override,-dac_read_search"
        prefix = (setpriv, f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}", "--")
    done = check(*flags(redis_server.url, pool), prefix=prefix)
    assert done.returncode == 1
    assert "✗ pool: permission denied connecting to" in done.stdout
    assert "SupplementaryGroups=www-data" in done.stdout


@pytest.mark.parametrize(
    ("worker", "expected", "hint"),
    [
        ("missing", "no such file", "install the worker there"),
        ("relative", "settings: invalid setting worker_script", "fix that setting"),
    ],
)
def test_worker_script_missing_or_relative(
    redis_server: RedisServer, pool: Pool, tmp_path: Path, worker: str, expected: str, hint: str
) -> None:
    script = tmp_path / "absent.php" if worker == "missing" else Path("fpm-pool/worker.php")
    done = check(*flags(redis_server.url, pool, script))
    assert done.returncode == 1
    assert expected in done.stdout and f"hint: {hint}" in done.stdout


def test_stream_group(redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., object]) -> None:
    before = check(*flags(redis_server.url, pool), "--stream", "jobs")
    assert before.returncode == 1 and "✗ stream jobs: does not exist yet" in before.stdout
    start_daemon(pool.listen, "--stream", "jobs", wait=False)

    def passing() -> subprocess.CompletedProcess[str] | None:
        after = check(*flags(redis_server.url, pool), "--stream", "jobs")
        return after if after.returncode == 0 else None

    after = wait_for(passing, timeout=10, what="the group to exist")
    assert isinstance(after, subprocess.CompletedProcess)
    assert "✓ stream jobs: group asyncphp exists" in after.stdout


def test_state_dir(redis_server: RedisServer, pool: Pool, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = check(*flags(redis_server.url, pool), "--state-dir", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"✓ state_dir {state} does not exist yet; the daemon creates it" in done.stdout
    state.mkdir()
    done = check(*flags(redis_server.url, pool), "--state-dir", str(state))
    assert f"✓ state_dir {state} is writable (pub/sub spill files)" in done.stdout
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = check(*flags(redis_server.url, pool), "--state-dir", str(blocker))
    assert done.returncode == 1 and f"✗ state_dir {blocker}: not a directory" in done.stdout


def test_scheduling_settings_are_shown_and_delayed_jobs_counted(
    redis_server: RedisServer, pool: Pool
) -> None:
    from asyncphp.caller import enqueue

    enqueue({"n": 1}, stream="bulk", redis_url=redis_server.url, delay=3600)
    done = check(
        *flags(redis_server.url, pool), "--stream", "urgent", "--stream", "bulk", "--priority", "strict",
        "--stream-max-in-flight", "bulk=2", "--stream-rate", "bulk=20/min",
    )  # fmt: skip
    assert (
        "✓ scheduling: priority strict: urgent before bulk (at most 2 at once, 20/min across the daemons)"
        in (done.stdout)
    ), done.stdout
    assert "✓ stream bulk: 1 delayed job(s) waiting (asyncphp delayed list)" in done.stdout
    bad = check(*flags(redis_server.url, pool), "--stream", "a", "--stream-rate", "b=1/s")
    assert bad.returncode == 1 and "stream_rate: 'b' is not one of the streams (a)" in bad.stdout


def test_an_acl_missing_what_the_durable_mode_needs_beyond_its_keys(
    redis_server: RedisServer, pool: Pool
) -> None:
    import redis

    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(
        "ACL", "SETUSER", "narrow", "on", ">pw", "resetchannels", "~jobs*", "+@all", "-client|unblock"
    )
    admin.close()
    url = f"redis://narrow:pw@127.0.0.1:{redis_server.port}/0"
    done = check(*flags(url, pool), "--stream", "jobs")
    assert done.returncode == 1
    assert "✗ redis refused CLIENT UNBLOCK" in done.stdout
    assert "✗ redis refused the subscription to jobs:delayed" in done.stdout
    ok = check(*flags(redis_server.url, pool), "--stream", "jobs")
    assert "✓ delayed-job notices: subscribed to jobs:delayed" in ok.stdout, ok.stdout
