"""Redis URLs: how they are shown (never with a password), and the connection pool they name.

Besides redis-py's own ``redis://``, ``rediss://`` and ``unix://``, a Sentinel-monitored master:

    redis+sentinel://[[user]:password@]host:port[,host:port…]/master-name[/db][?sentinel_password=…]

The hosts are the Sentinels; the credentials and db are the master's. The master is looked up
each time a pool is made, so a reconnect after a failover finds the promoted replica.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis
from redis.connection import ConnectionPool, parse_url
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for log lines and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def validate(url: str) -> None:
    """Raise ValueError if ``url`` is not a Redis URL this package can connect to."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        _sentinel_parts(url)
    else:
        parse_url(url)


def connection_pool(url: str, password_file: str = "", **options: Any) -> ConnectionPool:
    """A redis-py connection pool for ``url``; ``options`` are connection settings (timeouts…).
    ``password_file`` holds the password for a URL without one (``redis_password_file``).

    Raises:
        redis.RedisError: for a Sentinel URL, when no Sentinel answers or none knows the master.
        OSError: the password file cannot be read.
    """
    if password_file and urlsplit(url).password is None:
        options["password"] = Path(password_file).read_text().strip()
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return ConnectionPool.from_url(url, **options)
    hosts, master, db, username, password, sentinel_password = _sentinel_parts(url)
    timeout = options.get("socket_connect_timeout", 2.0)
    sentinel_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if sentinel_password:
        sentinel_options["password"] = sentinel_password
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options)
    try:
        host, port = sentinel.discover_master(master)
    finally:
        for client in sentinel.sentinels:  # asked once per pool: no connections left behind
            client.close()
    if password is not None and "password" not in options:
        options["password"] = password
    return ConnectionPool(host=host, port=port, db=db, username=username, **options)


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, str | None, str | None]:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a sentinel URL ends in /master-name or /master-name/db")
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    sentinel_password = query.get("sentinel_password", [None])[0]
    return hosts, path[0], int(path[1]) if len(path) == 2 else 0, username, password, sentinel_password


def client(url: str, password_file: str = "", **options: Any) -> redis.Redis:
    """A redis-py client for ``url`` (see :func:`connection_pool`)."""
    # from_pool: the client owns the pool, so close() disconnects it too.
    return redis.Redis.from_pool(connection_pool(url, password_file, **options))
