"""``asyncphp status``: every live daemon, on every host, from their heartbeats in Redis; the
streams' lag and dead letters; and the local pool's children, from its pm.status_path."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis

from asyncphp import redisurl
from asyncphp.ops import delayed, probe
from asyncphp.redisurl import Client
from asyncphp.settings import Settings, SettingsError, from_arguments
from asyncphp.wire.fastcgi import FastCGIError
from asyncphp.wire.keys import DAEMON_PREFIX, Keys

COUNTERS = ("received", "dispatched", "completed", "failed", "retried", "given_up", "dropped", "rejected",
            "spilled", "abandoned", "dead_lettered")  # fmt: skip


def collect(settings: Settings) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (what ``--json`` prints)."""
    client = redisurl.client(
        settings.redis_url, settings.redis_password_file, socket_connect_timeout=2.0, socket_timeout=5.0
    )
    try:
        daemons = []
        keys: Any = client.scan_iter(match=DAEMON_PREFIX + "*", count=100)  # redis-py's types are loose here
        for key in sorted(keys):
            hash_: Any = client.hgetall(key)
            fields = {k.decode(): v.decode() for k, v in hash_.items()}
            if fields:
                daemons.append({"name": key.decode()[len(DAEMON_PREFIX) :], **_typed(fields)})
        streams = {}
        for stream in sorted(
            {s for d in daemons for s in d.get("streams", "").split(",") if s} | set(settings.streams)
        ):
            streams[stream] = _stream(client, stream, settings.group)
    finally:
        client.close()
    totals = {name: sum(int(d.get(name, 0)) for d in daemons) for name in (*COUNTERS, "in_flight", "queued")}
    return {"daemons": daemons, "totals": totals, "streams": streams, "pool": _pool(settings)}


def _typed(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(fields)
    for name in (*COUNTERS, "in_flight", "queued", "pid", "spill_waiting"):
        if name in out:
            out[name] = int(out[name])
    for name in ("started", "updated", "last_error_at"):
        if name in out:
            out[name] = float(out[name])
    return out


def _stream(client: Client, stream: str, group: str) -> dict[str, Any]:
    dead: Any = client.xlen(Keys(stream).dead)
    count, first = delayed.waiting(client, stream)
    found: dict[str, Any] = {
        "dead_letters": int(dead), "delayed": count, "next_due": first.timestamp() if first else None,
    }  # fmt: skip
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        return {**found, "error": "no such stream"}
    for info in groups:
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            found.update(
                group=group, lag=info.get("lag"), pending=info.get("pending"), consumers=info.get("consumers")
            )
    return found


def _pool(settings: Settings) -> dict[str, Any]:
    """The local pool's pm.status_path page (php-fpm answers it itself), if there is one."""
    if not settings.fpm_status_path:
        return {}
    try:
        response = probe.get(settings.fpm_socket, settings.fpm_status_path, "json", timeout=2.0)
        page = json.loads(response.head.partition(b"\r\n\r\n")[2])
    except (OSError, FastCGIError, ValueError) as exc:
        return {"address": str(settings.fpm_socket), "error": str(exc) or type(exc).__name__}
    keys = ("active processes", "idle processes", "total processes", "listen queue", "max listen queue",
            "accepted conn", "max children reached")  # fmt: skip
    return {"address": str(settings.fpm_socket), **{k.replace(" ", "_"): page.get(k) for k in keys}}


def render(data: Mapping[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = (
        "DAEMON",
        "HOST",
        "UP",
        "SOURCES",
        "DISPATCHED",
        "FAILED",
        "RETRIED",
        "IN FLIGHT",
        "QUEUED",
        "LAST ERROR",
    )
    rows = [header]
    for d in data["daemons"]:
        sources = ",".join(filter(None, [d.get("channels", ""), d.get("streams", "")]))
        failed = d.get("failed", 0) + d.get("given_up", 0) + d.get("dropped", 0)
        error = d.get("last_error", "") or "-"
        rows.append((
            d["name"], d.get("host", "?"), _duration(now - d.get("started", now)), sources,
            f"{d.get('dispatched', 0):,}", f"{failed:,}", f"{d.get('retried', 0):,}",
            str(d.get("in_flight", 0)), f"{d.get('queued', 0):,}", error[:60],
        ))  # fmt: skip
    t = data["totals"]
    rows.append((
        f"total: {len(data['daemons'])} daemon(s)", "", "", "", f"{t['dispatched']:,}",
        f"{t['failed'] + t['given_up'] + t['dropped']:,}", f"{t['retried']:,}", str(t["in_flight"]),
        f"{t['queued']:,}", "",
    ))  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    for d in data["daemons"]:
        removed = {release for release in d.get("releases_removed", "").split(",") if release}
        for item in (item for item in d.get("releases_waiting", "").split(",") if item):
            release, _, count = item.partition("=")
            gone = " (it was here, and was removed)" if release in removed else ""
            lines.append(f"daemon {d['name']}: {count} waiting for release {release}{gone}")
    for stream, info in data["streams"].items():
        waiting = ""
        if info.get("delayed"):
            due = datetime.fromtimestamp(info["next_due"]).astimezone().isoformat(timespec="seconds")
            waiting = f" · {info['delayed']:,} delayed, the next due {due}"
        if "error" in info:
            lines.append(f"stream {stream}: {info['error']} · {info['dead_letters']} dead letter(s){waiting}")
        else:
            lines.append(
                f"stream {stream}: group {info.get('group', '?')} · lag {info.get('lag')} · "
                f"{info.get('pending')} pending · {info.get('consumers')} consumer(s) · "
                f"{info['dead_letters']} dead letter(s){waiting}"
            )
    pool = data.get("pool") or {}
    if "error" in pool:
        lines.append(f"pool {pool['address']}: status page not read ({pool['error']})")
    elif pool:
        lines.append(
            f"pool {pool['address']}: {pool['active_processes']} active, {pool['idle_processes']} idle "
            f"children · listen queue {pool['listen_queue']} (max {pool['max_listen_queue']}) · "
            f"{pool['accepted_conn']:,} accepted"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def define(parser: argparse.ArgumentParser) -> None:
    """`asyncphp status`'s own options, declared on ``parser``; the daemon's settings follow them."""
    parser.description = (
        "Every live daemon, from its heartbeat in Redis. Takes the daemon's settings "
        "(--config, --redis-url, --fpm-socket …) to know where to look."
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="redraw every 2 s"
    )


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """`define`'s options and the daemon's settings (`asyncphp.settings.add_arguments`) in ``args``."""
    env = os.environ if env is None else env
    try:
        settings = from_arguments(args, env)
    except SettingsError as exc:
        print(f"asyncphp status: {exc}", file=sys.stderr)
        return 2
    try:
        while True:
            data = collect(settings)
            text = json.dumps(data, indent=2) if args.json else render(data)
            if args.watch is None:
                print(text)
                return 0
            print("\x1b[H\x1b[2J" + text, flush=True)  # clear the screen, then redraw
            time.sleep(args.watch)
    except redisurl.FAILURES as exc:
        print(f"asyncphp status: {redisurl.redact(settings.redis_url)}: {exc}", file=sys.stderr)
        return 69
    except KeyboardInterrupt:
        return 0
