"""The daemon's settings: one frozen object built once from TOML, ``ASYNCPHP_*`` env and flags.

Precedence rises in that order. Every bad value is reported as one line naming the setting and
where it came from, so an operator can fix it without reading code.

Each setting is declared once, as a field of `Settings` (type, default, parser, liveness, help);
its flag, environment variable, TOML key, ``--help`` line and SIGHUP behaviour are derived from
that, so adding one cannot leave the others behind. The settings tables of README.md and docs/
and the manual pages are made from it too (``python -m asyncphp.pages.docs``), and the unit tests
hold them, and the shipped ``systemd/daemon.toml``, to it.
"""

from __future__ import annotations

import argparse
import os
import socket
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from asyncphp.core.reading import Lane, Lanes, Priority, Rate
from asyncphp.redisurl import is_cluster, redact, require_tag, slot
from asyncphp.redisurl import validate as validate_redis_url
from asyncphp.version import __version__
from asyncphp.wire.meta import RELEASE

DEFAULT_CONFIG = Path("/etc/asyncphp/daemon.toml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

T = TypeVar("T")


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


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _redis_url(value: Any) -> str:
    url = _string(value)
    try:
        validate_redis_url(url)
    except ValueError as exc:
        raise ValueError(f"{redact(url)!r}: {exc}") from None
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


def _priority(value: Any) -> Priority:
    text = _string(value).lower()
    try:
        return Priority(text)
    except ValueError:
        raise ValueError(f"{value!r} is not one of {', '.join(p.value for p in Priority)}") from None


def _weights(value: Any) -> tuple[int, ...]:
    """``6:3:1`` (or a TOML list) → (6, 3, 1); ``""`` → ()."""
    if value == "" or value == []:
        return ()
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        value = ":".join(value)  # repeated flags
    items = value.split(":") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected weights such as 6:3:1, got {value!r}")
    return tuple(_count(1)(item.strip() if isinstance(item, str) else item) for item in items)


def _per_stream(parse: Callable[[Any], T]) -> Callable[[Any], tuple[tuple[str, T], ...]]:
    """``name=value,name=value`` (or a TOML table) → ((name, value), …)."""

    def per_stream(value: Any) -> tuple[tuple[str, T], ...]:
        if value == "" or value == {}:
            return ()
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            value = ",".join(value)  # repeated flags
        if isinstance(value, dict):
            pairs = list(value.items())
        elif isinstance(value, str):
            pairs = []
            for item in value.split(","):
                name, sep, text = item.partition("=")
                if not sep or not name.strip():
                    raise ValueError(f"{item.strip()!r} is not stream=value")
                pairs.append((name.strip(), text.strip()))
        else:
            raise ValueError(f"expected stream=value pairs, got {value!r}")
        out = []
        for name, item in pairs:
            try:
                out.append((_string(name), parse(item)))
            except ValueError as exc:
                raise ValueError(f"stream {name}: {exc}") from None
        return tuple(out)

    return per_stream


def _rate(value: Any) -> Rate:
    return Rate.parse(_string(value))


def _fpm_socket(value: Any) -> PoolAddress:
    return PoolAddress.parse(_string(value))


def _worker_script(value: Any) -> str:
    path = _absolute_path(value)
    # php-fpm answers "Primary script unknown" for a path with "..".
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"{value!r} must be an absolute path without '..'")
    return path


def _release(value: Any) -> str:
    if value == "":
        return ""
    text = _string(value)
    if not RELEASE.fullmatch(text):
        raise ValueError(f"{value!r} is not a release id (letters, digits, '.', '_', '-'; 64 at most)")
    return text


def _listen(value: Any) -> str:
    if value == "":
        return ""
    address = PoolAddress.parse(_string(value))  # the same host:port rules
    if isinstance(address.address, str):
        raise ValueError(f"{value!r} is not host:port")
    return str(address)


def _optional_absolute_path(value: Any) -> str:
    return "" if value == "" else _absolute_path(value)


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


def _switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _string(value).lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _log_level(value: Any) -> str:
    level = _string(value).upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


_SPEC = "asyncphp.setting"  # the metadata key, namespaced so other field metadata cannot clash


@dataclass(frozen=True)
class _Spec:
    parse: Callable[[Any], Any]
    help: str
    live: bool
    flag: str | None
    doc: str
    example: str


def setting(
    default: T,
    parse: Callable[[Any], T],
    help: str,
    *,
    live: bool = False,
    flag: str | None = None,
    doc: str = "",
    example: str = "",
) -> T:
    """A `Settings` field: its default, the parser that validates TOML, env and flag values, the
    ``--help`` text, whether a SIGHUP applies it, and a flag if the one derived from the name reads
    badly. Typed as the value so that mypy checks the default against the annotation.

    ``doc`` is the longer text of the settings tables in README.md and docs/ and of the manual
    (markdown: backticks, and links relative to the repository's root); without it, ``help``. It
    is kept apart from ``help`` because ``--help`` lists every setting in one screen. ``example``
    is a TOML value the shipped example file shows besides the default (or, with none, instead)."""
    spec = _Spec(parse, help, live, flag, doc or help, example)
    return field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class Settings:
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        _redis_url,
        "redis://, rediss:// (TLS), unix://, redis+sentinel:// or redis+cluster:// URL, with user and "
        "password if any",
        doc=(
            "the Redis to read: `redis://`, `rediss://` for TLS (`?ssl_ca_certs=/path` for a private CA), "
            "`unix://`, `redis://user:password@…` for an ACL user, `redis+sentinel://`, `redis+cluster://` "
            "(see [Redis Cluster](docs/cluster.md)); the password is never logged. A Sentinel-monitored "
            "master: `redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster`; on a cluster, the streams "
            "need a hash tag, such as `{commands}` or `commands{0}`"
        ),
    )
    # Used for a URL without a password; systemd's LoadCredential= puts it at
    # $CREDENTIALS_DIRECTORY/redis-password, which load() falls back to.
    redis_password_file: str = setting(
        "",
        _optional_absolute_path,
        "file holding the Redis password",
        example='"/etc/asyncphp/redis-password"',
        doc=(
            "file holding the Redis password, used when the URL has none; unset, "
            "`$CREDENTIALS_DIRECTORY/redis-password` if present (systemd `LoadCredential=`)"
        ),
    )
    redis_health_interval: float = setting(
        15.0,
        _positive_seconds,
        "seconds of silence before Redis is PINGed, and for its answer",
        live=True,
        doc=(
            "seconds of silence before Redis is PINGed, and then for its answer: a dead connection that no "
            "error reports (a firewall dropping it) is noticed within twice this"
        ),
    )
    channels: tuple[str, ...] = setting(
        ("commands",),
        _channels,
        "channel to subscribe to; repeatable (none when streams are given)",
        flag="--channel",
        doc=(
            "channels to subscribe to; none when `streams` are given and no channel is. `ASYNCPHP_CHANNEL` "
            "is comma-separated, and the caller's variable too. Each message's channel reaches the worker "
            "as `$_SERVER['ASYNCPHP_CHANNEL']`. Set in the TOML file, a channel adds pub/sub back to what "
            "`--stream` alone means"
        ),
    )
    streams: tuple[str, ...] = setting(
        (),
        _channels,
        "stream to read through the consumer group (the durable mode); repeatable",
        flag="--stream",
        example='["commands"]',
        doc=(
            "streams to read through the consumer group: the durable mode (see [Durable "
            "mode](README.md#durable-mode-redis-streams)); `ASYNCPHP_STREAM` is comma-separated"
        ),
    )
    group: str = setting(
        "asyncphp",
        _string,
        "the streams' consumer group",
        doc="the streams' consumer group, shared by the daemons that split the work",
    )
    # "" until load() fills in <hostname>-<pid>, which is unique per daemon and says where it runs.
    consumer: str = setting(
        "",
        _string,
        "this daemon's consumer name, unique in the group",
        example='"web1"',
        doc=(
            "this daemon's consumer name, unique in the group; unset, `<hostname>-<pid>`, unique per daemon "
            "and saying where it runs"
        ),
    )
    claim_idle: float = setting(
        60.0,
        _positive_seconds,
        "seconds before entries of a stopped consumer are taken over",
        doc=(
            "seconds before another consumer's unacknowledged entries are taken over; a live consumer keeps "
            "its long jobs, so this bounds only how late a stopped daemon's work resumes"
        ),
    )
    max_attempts: int = setting(
        5, _count(1), "attempts of a job that may have run: deliveries of a stream entry before it is "
        "dead-lettered; requests of a pub/sub job lost before any answer before it fails",
        doc="attempts of a job that may have run: deliveries of a stream entry before it is dead-lettered; "
        "requests of a pub/sub job lost before any answer (a child killed mid-request) before it fails, "
        "so that a poison message cannot keep the pool busy forever",
    )  # fmt: skip

    retry_delay: float = setting(
        1.0, _seconds, "seconds before a failed stream entry is retried, doubling each time"
    )
    # Scheduling between the streams, in the order they are given.
    priority: Priority = setting(  # noqa: RUF009 (an enum member: immutable)
        Priority.NONE,
        _priority,
        "how several streams share the pool: none (read alike), strict (each stream only when every "
        "one before it is empty), weighted (shares by --weights)",
        example='"strict"',
        doc=(
            "how several streams share the pool: `none` (read alike), `strict` (each stream only when every "
            "one before it is empty), `weighted` (shares by `weights`, so that no stream starves); see "
            "[Scheduling](docs/scheduling.md)"
        ),
    )
    weights: tuple[int, ...] = setting(
        (),
        _weights,
        "with priority weighted: one whole weight per stream, in order, e.g. 6:3:1",
        example="[6, 3, 1]",
        doc="with priority `weighted`: one whole weight per stream, in order, e.g. `6:3:1`",
    )
    stream_max_in_flight: tuple[tuple[str, int], ...] = setting(
        (),
        _per_stream(_count(1)),
        "jobs of a stream running (or queued, or waiting for a retry) at once, e.g. reports=2,mail=3",
        example="{ reports = 2 }",
        doc=(
            "jobs of a stream running (or queued, or waiting for a retry) at once, e.g. `reports=2,mail=3`, "
            "so that a slow class of jobs cannot take every child; per daemon, like `max_in_flight`"
        ),
    )
    stream_rate: tuple[tuple[str, Rate], ...] = setting(
        (),
        _per_stream(_rate),
        "jobs of a stream started per second (or minute, hour) by all daemons on this Redis together, "
        "e.g. mail=100/s,sms=20/min; the others wait in the stream",
        example='{ mail = "100/s", sms = "20/min" }',
        doc=(
            "jobs of a stream started per second (or minute, hour) by all daemons on this Redis together, "
            "e.g. `mail=100/s,sms=20/min`; the others wait in the stream"
        ),
    )
    move_delayed: bool = setting(
        True,
        _switch,
        "move the streams' delayed jobs into them when due (off: other daemons do; the worker sees "
        "ASYNCPHP_DUE_AT)",
        doc=(
            "move the streams' delayed jobs into them when due; of all the daemons that do, one moves each, "
            "atomically (`false`: other daemons do; the worker sees `ASYNCPHP_DUE_AT`)"
        ),
    )
    # setting() returns a dataclasses.field, and PoolAddress is frozen, so the default is shared safely.
    fpm_socket: PoolAddress = setting(  # noqa: RUF009
        PoolAddress(socket.AF_UNIX, "/run/php/asyncphp-commands.sock"),
        _fpm_socket,
        "the pool: a unix socket path, or host:port",
        doc="the pool: the `listen` of `fpm-pool/commands.conf`, a unix socket path, or `host:port` for TCP",
    )
    worker_script: str = setting(
        "/usr/local/lib/asyncphp/worker.php",
        _worker_script,
        "absolute path of the PHP script, as SCRIPT_FILENAME; {release} in it is the release that "
        "published the job, e.g. /srv/app/releases/{release}/bin/worker.php",
        example='"/srv/app/releases/{release}/bin/worker.php"',
        doc=(
            "absolute path of the PHP script, as the pool sees it (`SCRIPT_FILENAME`), without `..`; "
            "`{release}` in it is the release that published the job, e.g. "
            "`/srv/app/releases/{release}/bin/worker.php` (see [Release-aware jobs](docs/releases.md))"
        ),
    )
    releases_root: str = setting(
        "",
        _optional_absolute_path,
        "with {release} in worker_script: the directory every release's script must resolve into "
        "(symlinks included), e.g. /srv/app/releases",
        example='"/srv/app/releases"',
        doc=(
            "with `{release}` in `worker_script`: the directory every release's script must resolve into "
            "(symlinks included), e.g. `/srv/app/releases`"
        ),
    )
    default_release: str = setting(
        "",
        _release,
        "with {release}: the release for jobs published without one, e.g. current (a link)",
        example='"current"',
        doc="with `{release}`: the release of jobs published without one, e.g. `current` (a link)",
    )
    release_wait: float = setting(
        60.0,
        _seconds,
        "with {release}: seconds a job waits for its release to reach this host before it is given up "
        "(dead-lettered, or spilled)",
        live=True,
        doc=(
            "with `{release}`: seconds a job waits for its release to reach this host before it is given up "
            "(dead-lettered, or spilled)"
        ),
    )
    # php-fpm's own pages in the pool (commands.conf sets both).
    fpm_ping_path: str = setting(
        "/asyncphp-ping",
        _optional_path,
        "the pool's ping.path, for asyncphp check (empty: none)",
        doc="the pool's `ping.path`, as `commands.conf` sets it, for `asyncphp check`; empty: none",
    )
    fpm_status_path: str = setting(
        "/asyncphp-status",
        _optional_path,
        "the pool's pm.status_path, for asyncphp status (empty: none)",
        doc="the pool's `pm.status_path`, as `commands.conf` sets it, for `asyncphp status`; empty: none",
    )
    # More than the pool's children only fill php-fpm's listen backlog.
    max_in_flight: int = setting(
        5,
        _count(1),
        "requests open at once; the pool's pm.max_children",
        live=True,
        doc="requests open at once: the pool's `pm.max_children`; more only fill php-fpm's listen backlog",
    )
    max_queued: int = setting(
        100_000,
        _count(0),
        "messages waiting for a free request slot before new ones are dropped",
        live=True,
        doc="messages waiting for a free request slot before new ones are spilled or dropped",
    )
    # Counted in bytes too, so that large messages cannot exhaust memory.
    max_queued_bytes: int = setting(
        256 << 20,
        _count(0),
        "bytes of form bodies waiting before new ones are dropped",
        live=True,
        doc=(
            "bytes of form bodies waiting before new messages are spilled or dropped, so that large "
            "messages cannot exhaust memory"
        ),
    )
    retry_for: float = setting(
        60.0,
        _seconds,
        "seconds to retry a job the pool cannot take",
        live=True,
        doc="seconds of pool faults (refused, or unreachable) before a job is given up",
    )
    # Above the pool's request_terminate_timeout: php-fpm's own limit ends a hung job; this is the backstop.
    request_timeout: float = setting(
        600.0,
        _seconds,
        "seconds to wait for a complete answer (0: forever)",
        live=True,
        doc=(
            "seconds to wait for a complete answer, above the pool's `request_terminate_timeout` so that "
            "php-fpm's own limit ends a hung job first and this one only catches a peer that never answers; "
            "`0` waits forever"
        ),
    )
    # Below the unit's TimeoutStopSec, so that systemd does not kill the daemon mid-drain.
    drain_timeout: float = setting(
        10.0,
        _seconds,
        "seconds to finish jobs on SIGTERM",
        live=True,
        doc=(
            "seconds to finish jobs on SIGTERM; below the unit's `TimeoutStopSec` (20 s), so that systemd "
            "does not kill the daemon mid-drain"
        ),
    )
    max_message_bytes: int = setting(
        1 << 20,
        _count(1),
        "larger messages are skipped",
        live=True,
        doc="larger messages are skipped with a `WARNING`",
    )
    # PHP's own limits: past them the worker would get a truncated $_POST.
    max_nesting: int = setting(
        64,
        _count(1),
        "deeper messages are skipped; php.ini max_input_nesting_level",
        live=True,
        doc=(
            "messages nested deeper are skipped: PHP's `max_input_nesting_level`, past which the worker "
            "would get a truncated `$_POST`"
        ),
    )
    max_fields: int = setting(
        1000,
        _count(1),
        "messages with more form fields are skipped; php.ini max_input_vars",
        live=True,
        doc=(
            "messages with more form fields are skipped: PHP's `max_input_vars`, past which the worker "
            "would get a truncated `$_POST`"
        ),
    )
    metrics_listen: str = setting(
        "",
        _listen,
        "host:port to serve Prometheus metrics on, e.g. 127.0.0.1:9464 (empty: off)",
        example='"127.0.0.1:9464"',
        doc=(
            "`host:port` to serve Prometheus metrics on, e.g. `127.0.0.1:9464`; empty: off, as an open port "
            "should be a choice (see [Operating it](docs/operating.md))"
        ),
    )
    heartbeat_interval: float = setting(
        5.0,
        _seconds,
        "seconds between counters written to Redis for asyncphp status (0: off)",
        doc="seconds between this daemon's counters written to Redis for `asyncphp status`; `0`: off",
    )
    # systemd's StateDirectory= sets $STATE_DIRECTORY, which load() falls back to.
    state_dir: str = setting(
        "",
        _optional_absolute_path,
        "directory for the pub/sub spill file (messages that could not be queued, or were still "
        "queued at a stop); empty: none",
        example='"/var/lib/asyncphp"',
        doc=(
            "the directory of the pub/sub spill file, for messages that could not be queued or were still "
            "queued at a stop; unset, `$STATE_DIRECTORY` if set (systemd `StateDirectory=`; "
            "`ProtectSystem=strict` leaves no other directory writable), else none"
        ),
    )
    max_spill_bytes: int = setting(
        1 << 30,
        _count(0),
        "bytes the spill file may hold; past it, messages are dropped with an aggregated ERROR line",
        live=True,
        doc=(
            "bytes the spill file may hold, so that a long outage cannot fill the disk; past it, messages "
            "are dropped with an aggregated `ERROR` line"
        ),
    )
    log_level: str = setting(
        "INFO",
        _log_level,
        "DEBUG, INFO (one line per job, when it ends), WARNING or ERROR",
        live=True,
        doc=(
            "`INFO`: one line per job, when it ends (`DEBUG` adds one when it is sent); `WARNING` for only "
            "what went wrong; or `ERROR`"
        ),
    )
    traces: bool = setting(
        False,
        _switch,
        "emit an OpenTelemetry span per job, a child of the publisher's (the otel extra; exported where "
        "the standard OTEL_* variables say)",
        doc=(
            "`true`: an OpenTelemetry span per job, a child of the publisher's (the `otel` extra; exported "
            "where the standard `OTEL_*` variables say; see [Traces across the queue](docs/traces.md))"
        ),
    )
    # Under systemd, job lines go to stderr, which journald reads: one write per turn of the loop.
    # As journal entries of their own they carry fields, at a cost the README measures.
    journal_fields: bool = setting(
        False,
        _switch,
        "under systemd, log each job as a journal entry with ASYNCPHP_* fields (python-systemd) "
        "instead of a line on stderr",
        doc=(
            "`false`: under systemd, job lines go to stderr, which journald reads (warnings and errors are "
            "journal entries with fields either way); `true` sends each job line as a journal entry with "
            "`ASYNCPHP_CHANNEL`, `_REQUEST_ID`, `_MESSAGE_ID`, `_STATUS`, `_DURATION_MS` fields "
            "(python-systemd), for `journalctl ASYNCPHP_STATUS=500` (the text is the same), at a cost: see "
            "[Performance](docs/performance.md)"
        ),
    )

    @property
    def lanes(self) -> Lanes:
        """The streams as reading sees them (validated by :func:`load`)."""
        limits, rates = dict(self.stream_max_in_flight), dict(self.stream_rate)
        weights = self.weights or (1,) * len(self.streams)
        return Lanes(
            tuple(
                Lane(stream, weight, limits.get(stream, 0), rates.get(stream))
                for stream, weight in zip(self.streams, weights, strict=True)
            ),
            self.priority,
        )


@dataclass(frozen=True)
class Setting:
    """One setting as the parser, the environment, the TOML file and SIGHUP see it."""

    name: str
    flag: str
    env: str
    default: Any
    parse: Callable[[Any], Any]
    live: bool
    help: str
    doc: str = ""
    example: str = ""

    @property
    def repeatable(self) -> bool:
        return isinstance(self.default, tuple)

    @property
    def shown(self) -> str:
        """The default as an operator would write it on the command line."""
        value = self.default
        if self.repeatable:
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, Priority):
            value = value.value
        elif isinstance(value, bool):
            value = "true" if value else "false"
        return str(value) if value != "" else '""'  # "(default: ; …" reads as a typo


def _setting(f: Field[Any]) -> Setting:
    spec: _Spec = f.metadata[_SPEC]
    flag = spec.flag or "--" + f.name.replace("_", "-")
    # Named after the flag, so ASYNCPHP_CHANNEL means the same to the daemon and to the caller.
    env = "ASYNCPHP_" + flag[2:].replace("-", "_").upper()
    return Setting(f.name, flag, env, f.default, spec.parse, spec.live, spec.help, spec.doc, spec.example)


SETTINGS: tuple[Setting, ...] = tuple(_setting(f) for f in fields(Settings))
_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# Settings a SIGHUP applies without a restart; the others need one.
RELOADABLE: frozenset[str] = frozenset(s.name for s in SETTINGS if s.live)


DAEMON_DESCRIPTION = "Subscribe to Redis channels and hand each JSON message to a php-fpm pool."
DAEMON_EPILOG = (
    "Each setting can also come from the TOML file (the name with underscores) or from "
    "ASYNCPHP_<FLAG NAME> in the environment (ASYNCPHP_CHANNEL comma-separated); flags win over env, "
    "env over file. Those marked live are applied by SIGHUP. Exit status 2: invalid settings."
)


def _config_path(text: str) -> Path | None:
    # Empty, as `--config "$CFG"` with CFG unset gives: not named, as it was for publish and the
    # stream tools before they took the daemon's flag (Path("") would be ".").
    return Path(text) if text else None


def add_arguments(parser: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """Add ``--config`` and the flags of the settings ``names`` (default: every one) to ``parser``.

    Every command that reads the daemon's settings takes its flags from here, so that a flag means
    one thing wherever it is given; `from_arguments` reads them back.
    """
    unknown = set(names or ()) - _BY_NAME.keys()
    if unknown:
        raise ValueError(f"no such setting: {', '.join(sorted(unknown))}")
    parser.add_argument(
        "--config",
        type=_config_path,
        help=f"the daemon's TOML file (default: $ASYNCPHP_CONFIG, else {DEFAULT_CONFIG} if it exists)",
    )
    for s in SETTINGS:
        if names is None or s.name in names:
            parser.add_argument(
                s.flag,
                dest=s.name,
                action="append" if s.repeatable else "store",
                help=f"{s.help} (default: {s.shown}; env {s.env}{'; live' if s.live else ''})",
            )


def parser() -> argparse.ArgumentParser:
    """The command line of ``asyncphp-daemon``: every setting as a flag."""
    p = argparse.ArgumentParser(prog="asyncphp-daemon", description=DAEMON_DESCRIPTION, epilog=DAEMON_EPILOG)
    p.add_argument("--version", action="version", version=f"asyncphp {__version__}")
    add_arguments(p)
    return p


def command_line(args: argparse.Namespace) -> list[str]:
    """The flags that `add_arguments` parses back into ``args``'s settings, for a daemon started
    with what another command was given; as ``--flag=value``, so that a value may start with '-'."""
    flags = [f"--config={args.config}"] if args.config is not None else []
    for s in SETTINGS:
        value = getattr(args, s.name, None)
        if value is not None:
            flags += [f"{s.flag}={item}" for item in (value if s.repeatable else [value])]
    return flags


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
    return from_arguments(parser().parse_args(argv), env, default_config)


def from_arguments(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    default_config: Path = DEFAULT_CONFIG,
) -> Settings:
    """Settings from file, env and the flags `add_arguments` parsed into ``args``; a setting whose
    flag the command does not take comes from env or file alone.

    Raises:
        SettingsError: one line naming the bad setting and its source.
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[Any, str]] = {}

    config = args.config or (Path(env["ASYNCPHP_CONFIG"]) if env.get("ASYNCPHP_CONFIG") else None)
    if config is None and default_config.exists():
        config = default_config
    if config is not None:
        for key, value in _read_toml(config).items():
            if key not in _BY_NAME:
                raise SettingsError(f"config {config}: unknown setting {key!r}")
            raw[key] = (value, f"{config}")
    for s in SETTINGS:
        if env.get(s.env):
            raw[s.name] = (env[s.env], f"${s.env}")
        value = getattr(args, s.name, None)
        if value is not None:
            raw[s.name] = (value, s.flag)
    state = env.get("STATE_DIRECTORY")
    if "state_dir" not in raw and state:
        # systemd's StateDirectory=; a colon-separated list when the unit names several.
        raw["state_dir"] = (state.split(":")[0], "$STATE_DIRECTORY")

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = _BY_NAME[key].parse(value)
        except ValueError as exc:
            raise SettingsError(f"invalid setting {key} (from {source}): {exc}") from None
    _check_streams(values)
    _check_cluster(values)
    _check_releases(values)
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


def _check_releases(values: dict[str, Any]) -> None:
    script = values.get("worker_script", _BY_NAME["worker_script"].default)
    root = values.get("releases_root", "")
    if "{release}" not in script:
        return
    if not root:
        raise SettingsError(
            "invalid setting releases_root: worker_script names {release}, so the directory the releases "
            "are in must be given"
        )
    if not script.startswith(root.rstrip("/") + "/"):
        raise SettingsError(f"invalid setting worker_script: {script} is not inside releases_root ({root})")


def _check_streams(values: dict[str, Any]) -> None:
    """The settings that name streams, against the streams."""
    streams = values.get("streams", ())
    if len(set(streams)) != len(streams):
        raise SettingsError(f"invalid setting streams: a stream is named twice ({', '.join(streams)})")
    if values.get("priority", Priority.NONE) is not Priority.NONE and not streams:
        raise SettingsError("invalid setting priority: it orders streams, and none is given (--stream)")
    for name in ("stream_max_in_flight", "stream_rate"):
        named = [stream for stream, _ in values.get(name, ())]
        twice = sorted({stream for stream in named if named.count(stream) > 1})
        if twice:
            raise SettingsError(f"invalid setting {name}: {', '.join(twice)} given twice")
        for stream in named:
            if stream not in streams:
                listed = ", ".join(streams) or "none"
                raise SettingsError(
                    f"invalid setting {name}: {stream!r} is not one of the streams ({listed})"
                )
    weights = values.get("weights", ())
    if values.get("priority") is Priority.WEIGHTED:
        if len(weights) != len(streams):
            raise SettingsError(
                f"invalid setting weights: priority weighted needs one weight per stream, in order "
                f"({len(streams)}: {', '.join(streams) or 'none'}), got {len(weights)}"
            )
    elif weights:
        raise SettingsError("invalid setting weights: given without priority weighted")


def _check_cluster(values: dict[str, Any]) -> None:
    """On a cluster, a stream's keys and scripts stay on one shard only if its name has a hash tag."""
    if not is_cluster(values.get("redis_url", "")):
        return
    streams = values.get("streams", ())
    for stream in streams:
        try:
            require_tag(stream)
        except ValueError as exc:
            raise SettingsError(f"invalid setting streams: {exc}") from None
    if values.get("priority", Priority.NONE) is not Priority.NONE and len({slot(s) for s in streams}) > 1:
        raise SettingsError(
            "invalid setting priority: it orders the reads of streams on one shard; on a cluster, give the "
            "streams one hash tag ({jobs}high, {jobs}low), or no priority"
        )
