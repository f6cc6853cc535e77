"""``asyncphp check``: is everything the daemon needs in place? Safe to run before a restart, like
``nginx -t``: it loads the settings exactly as the daemon would and touches nothing."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

from asyncphp import redisurl
from asyncphp.core.reading import Priority
from asyncphp.loop.redislink import Link
from asyncphp.ops import probe
from asyncphp.redisurl import Target, redact
from asyncphp.settings import Settings, SettingsError, from_arguments
from asyncphp.wire.fastcgi import FastCGIError
from asyncphp.wire.keys import Keys

OK, FAILED = "✓", "✗"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: int = 0

    def passed(self, what: str) -> None:
        self.lines.append(f"{OK} {what}")

    def failed(self, what: str, hint: str) -> None:
        self.failures += 1
        self.lines.append(f"{FAILED} {what}\n    hint: {hint}")


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """The checks of the daemon's settings in ``args`` (`asyncphp.settings.add_arguments`)."""
    env = os.environ if env is None else env
    report = Report()
    try:
        settings = from_arguments(args, env)
    except SettingsError as exc:
        report.failed(f"settings: {exc}", "fix that setting; `asyncphp daemon --help` lists them all")
    else:
        report.passed(f"settings valid ({_summary(settings)})")
        if not settings.lanes.plain:
            report.passed(f"scheduling: {_scheduling(settings)}")
        _check_redis(settings, report)
        _check_pool(settings, report)
        _check_worker(settings, report)
        _check_state_dir(settings, report)
    print("\n".join(report.lines))
    print(
        f"{'all checks passed' if not report.failures else f'{report.failures} check(s) failed'}",
        file=sys.stderr,
    )
    return 0 if not report.failures else 1


def _summary(settings: Settings) -> str:
    sources = [f"channel {c}" for c in settings.channels] + [f"stream {s}" for s in settings.streams]
    return f"{', '.join(sources)}; pool {settings.fpm_socket}; worker {settings.worker_script}"


def _scheduling(settings: Settings) -> str:
    lanes = settings.lanes
    parts = []
    for lane in lanes.lanes:
        own = [f"weight {lane.weight}"] if lanes.priority is Priority.WEIGHTED else []
        own += [f"at most {lane.max_in_flight} at once"] if lane.max_in_flight else []
        own += [f"{lane.rate} across the daemons"] if lane.rate else []
        parts.append(f"{lane.stream}" + (f" ({', '.join(own)})" if own else ""))
    order = {Priority.STRICT: " before ", Priority.WEIGHTED: ", ", Priority.NONE: ", "}[lanes.priority]
    return f"priority {lanes.priority.value}: {order.join(parts)}"


def _check_redis(settings: Settings, report: Report) -> None:
    url = redact(settings.redis_url)
    target = Target(settings.redis_url, settings.redis_password_file)
    link = Link(target)
    try:
        where, version = link.open()
        link.call("PING")
    except redis.AuthenticationError as exc:
        report.failed(
            f"redis at {url}: {exc}", "wrong user or password: check redis_url or redis_password_file"
        )
        return
    except redis.RedisError as exc:
        hint = "is redis-server running there, and is redis_url right? (redis-cli -u URL ping)"
        if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc) or "NOPERM" in str(exc):
            hint = (
                "wrong user or password, or an ACL without the rights: check redis_url or redis_password_file"
            )
        report.failed(f"redis at {url}: {exc}", hint)
        return
    except OSError as exc:
        report.failed(f"redis at {url}: {exc}", "is redis_password_file readable by this user?")
        return
    again = "during a failover or a slot's migration? run check again"
    try:
        report.passed(f"redis reachable at {where} ({version}), PING answered")
        if target.cluster:
            _check_cluster(settings, link, report)
        for stream in settings.streams:
            try:
                with _served(settings, stream, link) as served:
                    _check_stream(settings, stream, served, report)
            except (*redisurl.FAILURES, OSError) as exc:
                report.failed(f"stream {stream}: {exc}", again)
        if settings.streams:
            _check_stream_rights(settings, link, report)
    except (*redisurl.FAILURES, OSError) as exc:
        report.failed(f"redis at {url}: {exc}", again)
    finally:
        link.close()


@contextlib.contextmanager
def _served(settings: Settings, stream: str, link: Link) -> Iterator[Link]:
    """``link``, or on a cluster one to the primary that serves ``stream``."""
    if not link.target.cluster:
        yield link
        return
    own = Link(link.target, route=stream)
    try:
        own.open()
        yield own
    finally:
        own.close()


def _check_cluster(settings: Settings, link: Link, report: Report) -> None:
    info = dict(
        line.split(":", 1)
        for line in bytes(link.call("CLUSTER", "INFO")).decode().splitlines()
        if ":" in line
    )
    if info.get("cluster_state") != "ok":
        report.failed(
            f"redis cluster state is {info.get('cluster_state')}",
            "CLUSTER INFO on each node says which slots fail",
        )
        return
    report.passed(
        f"redis cluster ok: {info.get('cluster_size')} shards, {info.get('cluster_known_nodes')} nodes"
    )
    if settings.streams:
        where = {s: urlsplit(link.target.url_for(s)).netloc.rpartition("@")[2] for s in settings.streams}
        report.passed(f"streams by primary: {', '.join(f'{s} on {node}' for s, node in where.items())}")


def _check_stream(settings: Settings, stream: str, link: Link, report: Report) -> None:
    waiting = int(link.call("ZCARD", Keys(stream).delayed))
    if waiting:
        report.passed(f"stream {stream}: {waiting} delayed job(s) waiting (asyncphp delayed list)")
    try:
        groups = link.call("XINFO", "GROUPS", stream)
    except redis.ResponseError:
        report.failed(
            f"stream {stream}: does not exist yet",
            "the daemon creates it (and its group) when it starts",
        )
        return
    names = [dict(zip(g[::2], g[1::2], strict=True)).get(b"name") for g in groups]
    if settings.group.encode() in names:
        report.passed(f"stream {stream}: group {settings.group} exists")
    else:
        report.failed(
            f"stream {stream}: no group {settings.group}",
            f"the daemon creates it when it starts, or: XGROUP CREATE {stream} {settings.group} 0",
        )


def _check_stream_rights(settings: Settings, link: Link, report: Report) -> None:
    """What the durable mode asks of an ACL beyond its keys, each tried harmlessly."""
    try:
        link.call("EVAL", "return 1", 0)
    except redis.ResponseError as exc:
        report.failed(
            f"redis refused a script: {exc}",
            "the durable mode runs Lua scripts (dead letters, delayed jobs, unique guards, rates): "
            "the ACL must allow EVAL",
        )
    try:
        link.call("CLIENT", "UNBLOCK", 0)  # no such client: it only asks whether we may
    except redis.ResponseError as exc:
        report.failed(
            f"redis refused CLIENT UNBLOCK: {exc}",
            "allow +client|id and +client|unblock: without them a limited or rate-limited stream that "
            "becomes readable waits for a 100 ms read to end",
        )
    if not settings.move_delayed:
        return
    channels = [Keys(stream).delayed for stream in settings.streams]
    client = redisurl.client(settings.redis_url, settings.redis_password_file, socket_timeout=5.0)
    listener = client.pubsub()
    try:
        listener.subscribe(*channels)
        for _ in channels:
            listener.get_message(timeout=2.0)
        report.passed(f"delayed-job notices: subscribed to {', '.join(channels)}")
    except redis.ResponseError as exc:
        report.failed(
            f"redis refused the subscription to {', '.join(channels)}: {exc}",
            "allow the channels (&<stream>:delayed) to the daemon and to publishers: without them a "
            "delayed job due before all others runs up to 2 s late",
        )
    finally:
        listener.close()
        client.close()


def _check_pool(settings: Settings, report: Report) -> None:
    address = settings.fpm_socket
    if isinstance(address.address, str) and not Path(address.address).exists():
        report.failed(
            f"pool: no socket at {address}",
            "is php-fpm running with fpm-pool/commands.conf, and does its listen match fpm_socket?",
        )
        return
    try:
        values = probe.get_values(address)
    except PermissionError:
        report.failed(
            f"pool: permission denied connecting to {address}",
            "this user must be allowed by the pool's listen.owner/listen.group/listen.mode "
            "(the unit joins www-data: SupplementaryGroups=www-data)",
        )
        return
    except (OSError, FastCGIError) as exc:
        report.failed(
            f"pool at {address}: {exc}", "is php-fpm listening there? does fpm_socket name the pool?"
        )
        return
    answered = ", ".join(f"{k.decode()}={v.decode()}" for k, v in sorted(values.items()))
    report.passed(f"pool at {address} answers FastCGI ({answered or 'FCGI_GET_VALUES'})")
    if settings.fpm_ping_path:
        try:
            response = probe.get(address, settings.fpm_ping_path)
        except (OSError, FastCGIError) as exc:
            report.failed(f"pool ping {settings.fpm_ping_path}: {exc}", "is the pool overloaded?")
            return
        body = response.head.partition(b"\r\n\r\n")[2].strip()
        if response.http_status == 200 and body == b"pong":
            report.passed(f"pool ping {settings.fpm_ping_path}: pong")
        else:
            report.failed(
                f"pool ping {settings.fpm_ping_path}: status {response.http_status}",
                'set ping.path in the pool to this path (commands.conf does), or fpm_ping_path = ""',
            )


def _check_worker(settings: Settings, report: Report) -> None:
    script = Path(settings.worker_script)
    if not isinstance(settings.fpm_socket.address, str):
        report.passed(f"worker {script}: absolute (the pool is on {settings.fpm_socket}: it checks the file)")
        return
    if not script.is_file():
        report.failed(
            f"worker {script}: no such file", "install the worker there, or point worker_script at it"
        )
    elif not os.access(script, os.R_OK):
        report.failed(f"worker {script}: not readable", "the pool's user (www-data) must be able to read it")
    else:
        report.passed(f"worker {script} exists and is readable")


def _check_state_dir(settings: Settings, report: Report) -> None:
    if not settings.state_dir:
        return  # no spill file: pub/sub messages with no room are dropped, as the settings say
    where = Path(settings.state_dir)
    hint = "the daemon keeps its pub/sub spill files there: make it writable by the daemon's user"
    if where.is_dir():
        if os.access(where, os.W_OK | os.X_OK):
            report.passed(f"state_dir {where} is writable (pub/sub spill files)")
        else:
            report.failed(f"state_dir {where}: not writable by this user", hint)
        return
    if where.exists():
        report.failed(f"state_dir {where}: not a directory", "point state_dir at a directory")
        return
    parent = next((p for p in where.parents if p.exists()), Path("/"))
    if os.access(parent, os.W_OK | os.X_OK):
        report.passed(f"state_dir {where} does not exist yet; the daemon creates it")
    else:
        report.failed(f"state_dir {where}: missing, and {parent} is not writable", hint)
