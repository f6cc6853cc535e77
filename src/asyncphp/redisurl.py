"""Redis URLs: how they are shown (never with a password), and the connection pool they name.

Besides redis-py's own ``redis://``, ``rediss://`` and ``unix://``, a Sentinel-monitored master:

    redis+sentinel://[[user]:password@]host:port[,host:port…]/master-name[/db][?sentinel_password=…]

The hosts are the Sentinels; the credentials and db are the master's. The master is looked up
each time a pool is made, so a reconnect after a failover finds the promoted replica.

And a Redis Cluster, through any of its nodes (the seeds), with TLS as ``rediss+cluster://``:

    redis+cluster://[[user]:password@]host:port[,host:port…]/[?pubsub=sharded|classic][&ssl_…=…]

The slot map is asked for when a connection is made for a key (:class:`Target`), so a
reconnect after a failover or a slot migration finds the key's new primary. ``pubsub`` says how
channels are published and read on a cluster: ``sharded`` (SPUBLISH/SSUBSCRIBE, on the shard
that owns the channel's slot; the default) or ``classic`` (PUBLISH/SUBSCRIBE, broadcast to every
node). Every other query option is redis-py's, applied to each node.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote, urlencode, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import ConnectionPool, parse_url
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from asyncphp.wire.replies import SlotRange, cluster_slots

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}  # and each node's scheme
PUBSUB_MODES = ("sharded", "classic")

# A client for redis_url: one server's (a plain URL, Sentinel) or a whole cluster's.
Client: TypeAlias = redis.Redis | RedisCluster
# What a client may raise when Redis fails or refuses: redis-py's cluster client also raises
# RedisClusterException, which is not a RedisError (no node reachable, keys across slots).
FAILURES = (redis.RedisError, RedisClusterException)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for log lines and error messages."""
    scheme, userinfo, hosts, rest = _split(url)
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}:***@{hosts}{rest}" if colon else url


def _split(url: str) -> tuple[str, str, str, str]:
    """``url`` as scheme, userinfo, hosts, and the rest (path, query), by hand: urllib refuses the
    hosts of a cluster or of Sentinels as soon as one after the first is bracketed (``a:1,[::1]:2``;
    the fix for CVE-2024-11168 rejects text before a bracket)."""
    scheme, _, rest = url.partition("://")
    end = min((at for at in (rest.find("/"), rest.find("?"), rest.find("#")) if at >= 0), default=len(rest))
    userinfo, _, hosts = rest[:end].rpartition("@")
    return scheme, userinfo, hosts, rest[end:]


def validate(url: str) -> None:
    """Raise ValueError if ``url`` is not a Redis URL this package can connect to."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        _sentinel_parts(url)
    elif is_cluster(url):
        parse_url(cluster(url).node_url(*cluster(url).seeds[0]))
    else:
        parse_url(url)


def is_cluster(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def slot(key: str) -> int:
    """The cluster slot of ``key``: one per hash tag (``{orders}``, ``orders{0}``)."""
    return int(key_slot(key.encode()))


def hash_tag(key: str) -> str:
    """What decides ``key``'s slot when it has a hash tag (the text in its first non-empty
    ``{…}``), or "" for a key without one, which shares its slot with no key derived from it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else ""


def require_tag(stream: str) -> None:
    """On a cluster, a stream's keys and scripts stay on one shard only if its name has a hash tag.

    Raises:
        ValueError: ``stream`` has none.
    """
    if not hash_tag(stream):
        raise ValueError(
            f"on a cluster, stream {stream!r} needs a hash tag, so that its dead letters, delayed jobs and "
            f"guards ({stream}:dead…) share its slot and its scripts run on one shard: name it "
            f"{{{stream}}}, or {stream}{{0}}… for partitions"
        )


@dataclass(frozen=True)
class ClusterURL:
    """A ``redis+cluster://`` URL, taken apart."""

    seeds: tuple[tuple[str, int], ...]
    scheme: str  # each node's: redis or rediss
    userinfo: str  # "user:password@", as written, or ""
    query: tuple[tuple[str, str], ...]  # redis-py's options, for every node
    pubsub: Literal["sharded", "classic"]

    def node_url(self, host: str, port: int) -> str:
        netloc = f"{self.userinfo}{f'[{host}]' if ':' in host else host}:{port}"
        return urlunsplit((self.scheme, netloc, "/0", urlencode(self.query), ""))


def cluster(url: str) -> ClusterURL:
    """Take a cluster URL apart.

    Raises:
        ValueError: it is not one, or names no seed, a database, or an unknown pub/sub mode.
    """
    scheme = url.partition("://")[0]
    if scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL: {redact(url)}")
    _, userinfo, hosts, rest = _split(url)
    path, _, query_text = rest.partition("#")[0].partition("?")
    seeds = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node address {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    if path.strip("/") not in ("", "0"):
        raise ValueError("a cluster has database 0 only: end the URL in / or /0")
    query = [(k, v) for k, values in parse_qs(query_text, keep_blank_values=True).items() for v in values]
    modes = [v for k, v in query if k == "pubsub"]
    pubsub = modes[-1] if modes else "sharded"
    if pubsub not in PUBSUB_MODES:
        raise ValueError(f"pubsub= is sharded or classic, not {pubsub!r}")
    options = tuple((k, v) for k, v in query if k != "pubsub")
    return ClusterURL(
        tuple(seeds), CLUSTER_SCHEMES[scheme], f"{userinfo}@" if userinfo else "", options,
        "classic" if pubsub == "classic" else "sharded",
    )  # fmt: skip


def cluster_client(url: str, password_file: str = "", **options: Any) -> RedisCluster:
    """A redis-py cluster client for a ``redis+cluster://`` URL: it asks the seeds for the slot
    map, follows MOVED and ASK, and asks again after a failover.

    Raises:
        redis.RedisError: no seed answers, or the cluster is not ok.
        OSError: the password file cannot be read.
    """
    parsed = cluster(url)
    if password_file and ":" not in parsed.userinfo:
        options["password"] = Path(password_file).read_text().strip()
    first, *others = parsed.seeds
    try:
        return RedisCluster(
            url=parsed.node_url(*first),
            startup_nodes=[ClusterNode(host, port) for host, port in others],
            protocol=2,
            **options,
        )
    except RedisClusterException as exc:  # not a RedisError: callers handle those, as for a server
        raise redis.ConnectionError(str(exc)) from exc


class Target:
    """Where connections for a Redis URL go: the server it names (a Sentinel's master, looked up
    at each connect), or on a cluster the primary that serves a key (:meth:`url_for`)."""

    def __init__(self, url: str, password_file: str = "") -> None:
        self.url = url
        self.password_file = password_file
        self._slots = SlotMap(url, password_file) if is_cluster(url) else None

    @property
    def cluster(self) -> bool:
        return self._slots is not None

    def url_for(self, key: str, max_age: float = 0.5) -> str:
        """The URL to connect to for ``key`` (on a cluster, its primary as the cluster said within
        ``max_age`` seconds; "" asks for any node that answers).

        Raises:
            redis.RedisError: no node of the cluster answered, or none serves the key's slot.
            OSError: the password file cannot be read.
        """
        return self.url if self._slots is None else self._slots.url_for(key, max_age)

    def stale(self) -> None:
        """A connection made from what :meth:`url_for` said failed: ask the cluster again next time."""
        if self._slots is not None:
            self._slots.stale()


class SlotMap:
    """A cluster's slots and the primary serving each, as its nodes last said (``CLUSTER SLOTS``).

    Asked of the node that answered last, then of the seeds, then of the other primaries known,
    each with a short timeout: a hung node holds the caller (the event loop) that long at most.
    Kept for a moment, so that the connections of one daemon that reconnect together (after a
    failover) ask once; and asked again when a connection made from it failed.
    """

    QUERY_TIMEOUT = 0.5  # seconds for connecting to one node and its answer: ~1 ms on a LAN
    # After an ask no node answered, the next waits this many times as long as it took: nodes that
    # hang (a network black hole) hold the loop a fifth of the time at most, nodes that refuse
    # (a cluster restarting) are asked again soon.
    IDLE_AFTER_FAILURE = 4.0

    def __init__(self, url: str, password_file: str) -> None:
        self._url = cluster(url)
        self._password_file = password_file
        self._ranges: list[SlotRange] = []
        self._asked_at = -math.inf
        self._last: tuple[str, int] | None = None  # the node that answered last
        self._failure: redis.ConnectionError | None = None
        self._quiet_until = -math.inf  # after a failed ask
        # The daemon's connections are opened on threads of their own (asyncphp.loop.keeper), and
        # share one map: one asks at a time, the others use what it found.
        self._lock = threading.Lock()

    def url_for(self, key: str, max_age: float) -> str:
        with self._lock:
            return self._url_for(key, max_age)

    def _url_for(self, key: str, max_age: float) -> str:
        now = time.monotonic()
        if now - self._asked_at > max_age:
            if now < self._quiet_until and self._failure is not None:
                raise self._failure
            self._ask()
        if not key:
            assert self._last is not None
            return self._url.node_url(*self._last)
        wanted = slot(key)
        for served in self._ranges:
            if served.first <= wanted <= served.last:
                return self._url.node_url(served.host, served.port)
        raise redis.RedisError(f"no primary serves slot {wanted} ({key}) in the cluster's slot map")

    def stale(self) -> None:
        self._asked_at = -math.inf

    def _ask(self) -> None:
        known = [(r.host, r.port) for r in self._ranges]
        order = list(dict.fromkeys([*([self._last] if self._last else []), *self._url.seeds, *known]))
        errors = []
        began = time.monotonic()
        for host, port in order:
            try:
                ranges = self._query(host, port)
            except (redis.RedisError, OSError) as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            self._ranges = [r if r.host else SlotRange(r.first, r.last, host, r.port) for r in ranges]
            self._last, self._asked_at, self._failure = (host, port), time.monotonic(), None
            return
        ended = time.monotonic()
        self._quiet_until = ended + self.IDLE_AFTER_FAILURE * (ended - began)
        self._failure = redis.ConnectionError(
            "no node of the cluster answered CLUSTER SLOTS: " + "; ".join(errors)
        )
        raise self._failure

    def _query(self, host: str, port: int) -> list[SlotRange]:
        options: dict[str, Any] = {
            "socket_timeout": self.QUERY_TIMEOUT,
            "socket_connect_timeout": self.QUERY_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
        }
        pool = connection_pool(self._url.node_url(host, port), self._password_file, **options)
        pool.connection_kwargs["protocol"] = 2
        connection = pool.make_connection()
        try:
            connection.connect()
            connection.send_command("CLUSTER", "SLOTS")
            return cluster_slots(connection.read_response())
        finally:
            connection.disconnect()
            pool.disconnect()


def connection_pool(url: str, password_file: str = "", **options: Any) -> ConnectionPool:
    """A redis-py connection pool for ``url``; ``options`` are connection settings (timeouts…).
    ``password_file`` holds the password for a URL without one (``redis_password_file``).

    Raises:
        redis.RedisError: for a Sentinel URL, when no Sentinel answers or none knows the master.
        OSError: the password file cannot be read.
    """
    if password_file and ":" not in _split(url)[1]:
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
    _, userinfo, netloc, rest = _split(url)
    path_text, _, query_text = rest.partition("#")[0].partition("?")
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in path_text.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a sentinel URL ends in /master-name or /master-name/db")
    query = parse_qs(query_text)
    user, colon, secret = userinfo.partition(":")
    username = unquote(user) if user else None
    password = unquote(secret) if colon else None
    sentinel_password = query.get("sentinel_password", [None])[0]
    return hosts, path[0], int(path[1]) if len(path) == 2 else 0, username, password, sentinel_password


def client(url: str, password_file: str = "", **options: Any) -> Client:
    """A redis-py client for ``url`` (see :func:`connection_pool` and :func:`cluster_client`)."""
    if is_cluster(url):
        return cluster_client(url, password_file, **options)
    # from_pool: the client owns the pool, so close() disconnects it too.
    return redis.Redis.from_pool(connection_pool(url, password_file, **options))
