"""The daemon's settings: one frozen object built once from TOML, ``ASYNCPHP_*`` env and flags.

Precedence rises in that order. Every bad value is reported as one line naming the setting and
where it came from, so an operator can fix it without reading code.
"""

from __future__ import annotations

import argparse
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from asyncphp import __version__
from asyncphp.redisurl import validate as validate_redis_url

DEFAULT_CONFIG = Path("/etc/asyncphp/daemon.toml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting is missing, unknown or invalid; the message names it."""


@dataclass(frozen=True)
class PoolAddress:
    """Where the php-fpm pool listens: a unix socket path, or a TCP host and port."""

    family: socket.AddressFamily
    address: str | tuple[str, int]

    @classmethod
    def parse(cls, text: str) -> PoolAddress:
        if text.startswith("/"):
            return cls(socket.AF_UNIX, text)
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return cls(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, int(port)))
        raise ValueError(f"{text!r} is neither an absolute unix socket path nor host:port")

    def __str__(self) -> str:
        if isinstance(self.address, str):
            return self.address
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A file holding the Redis password, for a URL without one; systemd's LoadCredential= puts it
    # at $CREDENTIALS_DIRECTORY/redis-password, which is used when this is not set.
    redis_password_file: str | None = None
    redis_health_interval: float = 15.0  # seconds of silence before a PING, and then to wait for its answer
    channels: tuple[str, ...] = ("commands",)  # none by default when streams are given
    streams: tuple[str, ...] = ()  # the durable mode: Redis Streams read through a consumer group
    group: str = "asyncphp"
    consumer: str = ""  # unique per daemon; "" means <hostname>-<pid>
    claim_idle: float = 60.0  # seconds an entry may sit unacknowledged before another consumer takes it
    max_attempts: int = 5  # deliveries of a stream entry before it is dead-lettered
    retry_delay: float = 1.0  # seconds before a failed stream entry is tried again, doubling each time
    fpm_socket: PoolAddress = PoolAddress(socket.AF_UNIX, "/run/php/asyncphp-commands.sock")
    worker_script: str = "/usr/local/lib/asyncphp/worker.php"
    # php-fpm's own pages in the pool (commands.conf sets both); "" if the pool has none.
    fpm_ping_path: str = "/asyncphp-ping"
    fpm_status_path: str = "/asyncphp-status"
    max_in_flight: int = 5  # the pool's pm.max_children
    max_queued: int = 100_000
    max_queued_bytes: int = 256 << 20  # form bodies waiting, so that large messages cannot exhaust memory
    retry_for: float = 60.0  # seconds a job may wait for an unreachable or refusing pool
    request_timeout: float = (
        600.0  # seconds for a complete answer; above the pool's request_terminate_timeout
    )
    drain_timeout: float = 10.0  # seconds to finish jobs at shutdown, below the unit's TimeoutStopSec
    max_message_bytes: int = 1 << 20
    max_nesting: int = 64  # php.ini max_input_nesting_level
    max_fields: int = 1000  # php.ini max_input_vars
    metrics_listen: str = ""  # host:port for Prometheus to scrape, e.g. 127.0.0.1:9464; "" is off
    heartbeat_interval: float = 5.0  # seconds between this daemon's counters written to Redis; 0: none
    log_level: str = "INFO"


# Settings a SIGHUP applies without a restart; the others need one.
RELOADABLE = frozenset(
    {"redis_health_interval", "max_in_flight", "max_queued", "max_queued_bytes", "retry_for",
     "request_timeout", "drain_timeout", "max_message_bytes", "max_nesting", "max_fields", "log_level"}
)  # fmt: skip


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _redis_url(value: Any) -> str:
    url = _string(value)
    try:
        validate_redis_url(url)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return url


def _absolute_path(value: Any) -> str:
    path = PurePosixPath(_string(value))
    if not path.is_absolute():
        raise ValueError(f"{value!r} is not an absolute path")
    return str(path)


def _channels(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"expected a non-empty list of channel names, got {value!r}")
    return tuple(_string(item.strip() if isinstance(item, str) else item) for item in items)


def _fpm_socket(value: Any) -> PoolAddress:
    return PoolAddress.parse(_string(value))


def _worker_script(value: Any) -> str:
    path = _absolute_path(value)
    # php-fpm answers "Primary script unknown" for a path with "..".
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"{value!r} must be an absolute path without '..'")
    return path


def _listen(value: Any) -> str:
    if value == "":
        return ""
    address = PoolAddress.parse(_string(value))  # the same host:port rules
    if isinstance(address.address, str):
        raise ValueError(f"{value!r} is not host:port")
    return str(address)


def _optional_path(value: Any) -> str:
    if value == "":
        return ""
    text = _string(value)
    if not text.startswith("/"):
        raise ValueError(f"{value!r} must start with /")
    return text


def _count(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"{number} is below {minimum}")
        return number

    return parse


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected seconds, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected seconds, got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"{number} is not a duration in seconds")
    return number


def _positive_seconds(value: Any) -> float:
    seconds = _seconds(value)
    if seconds <= 0:
        raise ValueError(f"{seconds} is not a positive number of seconds")
    return seconds


def _log_level(value: Any) -> str:
    level = _string(value).upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


_FIELDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "redis_url": (_redis_url, "redis://, rediss:// (TLS) or unix:// URL, with user and password if any"),
    "redis_password_file": (_absolute_path, "file holding the Redis password"),
    "redis_health_interval": (
        _positive_seconds,
        "seconds of silence before Redis is PINGed, and for its answer",
    ),
    "channels": (_channels, "channel to subscribe to; repeatable"),
    "streams": (_channels, "stream to read through the consumer group; repeatable"),
    "group": (_string, "the streams' consumer group"),
    "consumer": (_string, "this daemon's consumer name, unique in the group"),
    "claim_idle": (_positive_seconds, "seconds before entries of a stopped consumer are taken over"),
    "max_attempts": (_count(1), "deliveries of a stream entry before it is dead-lettered"),
    "retry_delay": (_seconds, "seconds before a failed stream entry is retried, doubling each time"),
    "fpm_socket": (_fpm_socket, "the pool: a unix socket path, or host:port"),
    "worker_script": (_worker_script, "absolute path of the PHP script, as SCRIPT_FILENAME"),
    "fpm_ping_path": (_optional_path, "the pool's ping.path, for asyncphp check (empty: none)"),
    "fpm_status_path": (_optional_path, "the pool's pm.status_path, for asyncphp status (empty: none)"),
    "max_in_flight": (_count(1), "requests open at once; the pool's pm.max_children"),
    "max_queued": (_count(0), "messages waiting for a free request slot before new ones are dropped"),
    "max_queued_bytes": (_count(0), "bytes of form bodies waiting before new ones are dropped"),
    "retry_for": (_seconds, "seconds to retry a job the pool cannot take"),
    "request_timeout": (_seconds, "seconds to wait for a complete answer (0: forever)"),
    "drain_timeout": (_seconds, "seconds to finish jobs on SIGTERM"),
    "max_message_bytes": (_count(1), "larger messages are skipped"),
    "max_nesting": (_count(1), "deeper messages are skipped; php.ini max_input_nesting_level"),
    "max_fields": (_count(1), "messages with more form fields are skipped; php.ini max_input_vars"),
    "metrics_listen": (_listen, "host:port to serve Prometheus metrics on, e.g. 127.0.0.1:9464 (empty: off)"),
    "heartbeat_interval": (
        _seconds,
        "seconds between counters written to Redis for asyncphp status (0: off)",
    ),
    "log_level": (_log_level, "DEBUG, INFO (two lines per job), WARNING or ERROR"),
}


def _flag(key: str) -> str:
    return {"channels": "--channel", "streams": "--stream"}.get(key, "--" + key.replace("_", "-"))


def _env(key: str) -> str:
    # Named after the flag, so ASYNCPHP_CHANNEL means the same to the daemon and to the caller.
    return "ASYNCPHP_" + _flag(key)[2:].replace("-", "_").upper()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asyncphp-daemon",
        description="Subscribe to Redis channels and hand each JSON message to a php-fpm pool.",
        epilog="Each setting can also come from the TOML file (the name with underscores) or from "
        "ASYNCPHP_<FLAG NAME> in the environment (ASYNCPHP_CHANNEL comma-separated); flags win over env, "
        "env over file. Exit status 2: invalid settings.",
    )
    p.add_argument("--version", action="version", version=f"asyncphp {__version__}")
    p.add_argument("--config", type=Path, help=f"TOML file (default: {DEFAULT_CONFIG} if it exists)")
    defaults = Settings()
    for key, (_, text) in _FIELDS.items():
        default = getattr(defaults, key)
        shown = ", ".join(default) if isinstance(default, tuple) else default
        p.add_argument(
            _flag(key),
            dest=key,
            action="append" if key in ("channels", "streams") else "store",
            help=f"{text} (default: {shown}; env {_env(key)})",
        )
    return p


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config {path}: {exc}") from None


def load(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    default_config: Path = DEFAULT_CONFIG,
) -> Settings:
    """Settings from file, env and flags.

    Raises:
        SettingsError: one line naming the bad setting and its source.
    """
    env = os.environ if env is None else env
    args = parser().parse_args(argv)
    raw: dict[str, tuple[Any, str]] = {}

    config = args.config or (Path(env["ASYNCPHP_CONFIG"]) if env.get("ASYNCPHP_CONFIG") else None)
    if config is None and default_config.exists():
        config = default_config
    if config is not None:
        for key, value in _read_toml(config).items():
            if key not in _FIELDS:
                raise SettingsError(f"config {config}: unknown setting {key!r}")
            raw[key] = (value, f"{config}")
    for key in _FIELDS:
        name = _env(key)
        if env.get(name):
            raw[key] = (env[name], f"${name}")
        value = getattr(args, key)
        if value is not None:
            raw[key] = (value, _flag(key))

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = _FIELDS[key][0](value)
        except ValueError as exc:
            raise SettingsError(f"invalid setting {key} (from {source}): {exc}") from None
    if values.get("streams") and "channels" not in values:
        values["channels"] = ()  # --stream alone means the durable mode instead of pub/sub
    if not values.get("consumer"):
        values["consumer"] = f"{socket.gethostname()}-{os.getpid()}"  # unique per daemon, and says where
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if "redis_password_file" not in values and credentials:
        candidate = Path(credentials) / "redis-password"
        if candidate.exists():
            values["redis_password_file"] = str(candidate)
    return Settings(**values)
