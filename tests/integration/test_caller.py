"""publish() and asyncphp-publish against a real Redis."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from asyncphp.caller import EXIT_BAD_PAYLOAD, EXIT_NO_SUBSCRIBER, EXIT_UNREACHABLE, publish
from asyncphp.dev.sandbox import Pool, RedisServer, free_port
from tests.integration.conftest import Daemon, lines


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asyncphp.caller", *args], capture_output=True, text=True)


def test_publish_counts_subscribers(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    assert publish({"timestamp": "nobody listens"}, redis_url=redis_server.url) == 0
    start_daemon(pool.listen)
    assert publish({"timestamp": "one listens"}, redis_url=redis_server.url) == 1


def test_publish_raises_when_redis_is_unreachable() -> None:
    with pytest.raises(redis.ConnectionError):
        publish({"a": 1}, redis_url=f"redis://127.0.0.1:{free_port()}/0")


def test_cli_says_when_nobody_is_subscribed(redis_server: RedisServer) -> None:
    done = cli("--redis-url", redis_server.url, "--channel", "empty")
    assert done.returncode == EXIT_NO_SUBSCRIBER
    assert done.stderr.strip() == "asyncphp-publish: nobody is subscribed to 'empty': the message was dropped"


def test_cli_unreachable_redis() -> None:
    done = cli("--redis-url", f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert done.returncode == EXIT_UNREACHABLE
    assert done.stderr.count("\n") == 1 and "cannot publish" in done.stderr
    assert "secret" not in done.stderr


def test_cli_rejects_a_payload_that_is_not_an_object(redis_server: RedisServer) -> None:
    done = cli("--redis-url", redis_server.url, "--data", "[1, 2]")
    assert done.returncode == EXIT_BAD_PAYLOAD
    assert done.stderr.count("\n") == 1 and "JSON object" in done.stderr


def test_cli_env_and_stdin(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(pool.listen, "--channel", "jobs")
    done = subprocess.run(
        [sys.executable, "-m", "asyncphp.caller", "--data", "-"],
        input='{"timestamp": "from stdin"}',
        capture_output=True,
        text=True,
        env={"ASYNCPHP_REDIS_URL": redis_server.url, "ASYNCPHP_CHANNEL": "jobs", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr
    daemon.wait_for("job 1 on jobs: status 200")


def test_help_documents_exit_statuses() -> None:
    out = cli("--help").stdout
    for status in ("0", "1", "65", "69"):
        assert f"  {status} " in out


def test_console_scripts_and_key_value_fields(
    redis_server: RedisServer, start_pool: Callable[..., Pool], start_daemon: Callable[..., Daemon]
) -> None:
    pool = start_pool()
    daemon = start_daemon(pool.listen)
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [bin_dir / "asyncphp-publish", "--redis-url", redis_server.url, "timestamp=from key value", "x=1"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    daemon.wait_for("job 1 on commands: status 200")
    assert lines(pool.worker_log) == ["from key value"]
    assert (
        "usage: asyncphp-daemon"
        in subprocess.run([bin_dir / "asyncphp-daemon", "--help"], capture_output=True, text=True).stdout
    )


def test_cli_publishes_where_the_daemon_reads_by_its_settings(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Old behaviour: `asyncphp publish` ignored daemon.toml (while dead, delayed and status read it), so
    # it published to 127.0.0.1:6379 and 'commands' whatever the daemon read (issue 23, item 8).
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'redis_url = "{redis_server.url}"\nchannels = ["mail", "other"]\nmax_message_bytes = 64\n'
    )
    client = redis.Redis.from_url(redis_server.url)
    listener = client.pubsub()
    listener.subscribe("mail")
    assert listener.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    by_flag = cli("--config", str(config), "to=ann")
    assert by_flag.returncode == 0, by_flag.stderr
    env = {"ASYNCPHP_CONFIG": str(config), "PATH": ""}
    by_env = subprocess.run(
        [sys.executable, "-m", "asyncphp.caller", "to=bob"], capture_output=True, text=True, env=env
    )
    assert by_env.returncode == 0, by_env.stderr
    got = [listener.get_message(timeout=5) for _ in range(2)]
    assert [m["data"] for m in got if m] == [b'{"to":"ann"}', b'{"to":"bob"}']
    # The daemon's limits too: a message it would skip is refused before it is sent.
    big = cli("--config", str(config), "text=" + "x" * 100)
    assert big.returncode == EXIT_BAD_PAYLOAD and "the daemon would skip this message" in big.stderr
    assert big.stderr.count("\n") == 1
    # A flag still wins over the file; a file that is not valid is one line, and nothing is sent.
    assert (
        cli("--config", str(config), "--channel", "mail", "--redis-url", "unix:///nowhere", "a=1").returncode
        == EXIT_UNREACHABLE
    )
    config.write_text("channels = 5\n")
    bad = cli("--config", str(config), "a=1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "channels" in bad.stderr, bad.stderr
    assert listener.get_message(timeout=0.5) is None
    listener.close()
    client.close()


def test_cli_needs_only_what_it_uses_of_the_daemon_s_settings(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A review's fault runs: a daemon.toml with a setting publishing does not use made every publish
    # exit 2 even with --redis-url and --channel given; an unreadable password file was a traceback;
    # a daemon of streams alone was published to on the channel 'commands', which nobody reads.
    client = redis.Redis.from_url(redis_server.url)
    bad = tmp_path / "bad.toml"
    bad.write_text('worker_script = "/srv/{release}/worker.php"\n')  # no releases_root: not valid
    env = {"ASYNCPHP_CONFIG": str(bad), "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "asyncphp.caller", "--redis-url", redis_server.url, "--stream", "jobs", "a=1"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and client.xlen("jobs") == 1, done.stderr
    unread = tmp_path / "secret.toml"
    unread.write_text(f'redis_url = "{redis_server.url}"\nredis_password_file = "{tmp_path}/none"\n')
    locked = cli("--config", str(unread), "a=1")
    assert locked.returncode == EXIT_UNREACHABLE and locked.stderr.count("\n") == 1, locked.stderr
    durable = tmp_path / "durable.toml"
    durable.write_text(f'redis_url = "{redis_server.url}"\nstreams = ["mail"]\n')
    added = cli("--config", str(durable), "to=ann")
    assert added.returncode == 0, added.stderr
    assert client.xrange("mail")[0][0].decode() == added.stdout.strip()
    client.close()
