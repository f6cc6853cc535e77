"""A Redis connection the event loop drives without ever waiting on it.

redis-py opens it (URL, Sentinel or a cluster's node, AUTH or ACL user, TLS, database, timeouts). After that,
commands are written without waiting for their replies, and replies are read, non-blocking, into
a hiredis reader whenever the poller says the socket is readable: each goes to the callback given
with its command, in order, or, when none is waiting (pub/sub messages), to the caller of
:meth:`Link.read`. redis-py's own reading is not used past the handshake: ``PubSub.get_message``
raises on a reply split across reads and then reconnects by itself, on a socket the poller would
not know.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionInterface, ConnectionPool
from redis.retry import Retry

from asyncphp.redisurl import Target, connection_pool
from asyncphp.wire.replies import ReplyError, server_version
from asyncphp.wire.resp import command as pack

CONNECT_TIMEOUT = 2.0  # seconds for connecting and each handshake step: the loop waits that long at most
READ_SIZE = 65536
# On a cluster, how often a link asks whether its key is still served where it is connected: a
# subscription Redis does not end (classic pub/sub on a demoted primary), a primary hung rather
# than dead (its connection silent, not closed) are left within this after the cluster moved on.
WHERE_INTERVAL = 2.0
CLOSED = "redis closed the connection"  # the reason a source may explain (pub/sub: its buffer limit)

Reply = Any  # bytes, int, list, None, or ReplyError
OnReply = Callable[[Reply], None]


# Replies by which a cluster's node says it does not serve the key now (a failover, a slot being
# migrated or moved): the link is made again, to the primary the cluster names then.
ELSEWHERE = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"})


def ignore(reply: Reply) -> None:
    """For a command whose reply does not matter (PING, a heartbeat's HSET), unless it says the
    key is served elsewhere now.

    Raises:
        redis.ConnectionError: a cluster's node no longer serves the key.
    """
    if isinstance(reply, ReplyError) and reply.code in ELSEWHERE:
        raise redis.ConnectionError(f"redis answered {reply}")


class Link:
    """One Redis connection: blocking to open, non-blocking from then on."""

    def __init__(self, target: Target, route: str = "") -> None:
        """On a cluster, the link goes to the primary that serves the key ``route`` (for "",
        to any node), as the cluster says at each :meth:`open`."""
        self.target = target
        self.route = route
        self._connected_to = ""  # the URL it was opened to
        self._pool: ConnectionPool | None = None
        self._connection: ConnectionInterface | None = None
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._waiting: deque[OnReply] = deque()
        self.last_read = time.monotonic()
        self.version: tuple[int, ...] = ()  # the server's, once open

    def open(self) -> tuple[str, str]:
        """Connect (again, if it was open) and authenticate; returns where it connected and the
        server's version, for the log.

        Raises:
            redis.RedisError, OSError: Redis is unreachable, refused us, or did not answer in time.
        """
        self._drop()
        self._reader = hiredis.Reader(replyError=ReplyError)  # nothing half-read from before
        options: dict[str, Any] = {
            "socket_timeout": CONNECT_TIMEOUT,  # a Redis that accepts but never answers must not hang us
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
        }
        url = self.target.url_for(self.route)
        self._pool = connection_pool(url, self.target.password_file, **options)
        # RESP2 whatever the URL asks: the replies are parsed here, in one shape (RESP3 turns
        # XINFO's arrays into maps and answers PING differently while subscribed).
        self._pool.connection_kwargs["protocol"] = 2
        connection = self._connection = self._pool.make_connection()
        try:
            connection.connect()
        except (redis.RedisError, OSError):
            self.target.stale()  # a cluster's primary gone: ask where the slot went, next time
            raise
        self._connected_to = url
        version = "version unknown"
        try:
            connection.send_command("INFO", "server")
            info = connection.read_response()
        except redis.exceptions.NoPermissionError:
            pass  # a least-privilege ACL user may do its job without being allowed INFO
        else:
            self.version = server_version(bytes(info))
            if self.version:
                version = "redis " + ".".join(map(str, self.version))
        pieces = dict(connection.repr_pieces())
        where = pieces["path"] if "path" in pieces else f"{pieces['host']}:{pieces['port']}"
        return str(where), version

    def misplaced(self) -> bool:
        """On a cluster: another primary serves ``route`` now (a failover, a migrated slot), as
        the cluster said within WHERE_INTERVAL; False when it cannot be asked."""
        if not self.target.cluster or not self.route or not self._connected_to:
            return False
        try:
            return self.target.url_for(self.route, WHERE_INTERVAL) != self._connected_to
        except (redis.RedisError, OSError):
            return False  # a dead connection shows up as one (PING)

    def call(self, *command: str | bytes | int) -> Reply:
        """Send a command and wait for its reply: only before :meth:`start`, for setting up."""
        assert self._connection is not None and self._sock is None
        self._connection.send_command(*command)
        return self._connection.read_response()

    def start(self) -> None:
        """From here on, the event loop drives the connection."""
        assert self._connection is not None
        # redis-py keeps the socket private; see the module docstring for why it is read directly.
        # (Through Any: whether redis-py declares the attribute differs between its versions.)
        connection: Any = self._connection
        sock = self._sock = connection._sock
        assert sock is not None
        sock.setblocking(False)
        self.last_read = time.monotonic()

    def fileno(self) -> int:
        if self._sock is None:
            raise redis.ConnectionError("the connection to redis is not open")
        return self._sock.fileno()

    @property
    def waiting(self) -> int:
        """Commands sent whose replies have not come yet."""
        return len(self._waiting)

    def send(self, *command: str | bytes | int, on_reply: OnReply | None = None) -> None:
        """Write a command now; its reply goes to ``on_reply`` (or out of :meth:`read` if None).

        Raises:
            redis.ConnectionError: the connection is closed or broken.
        """
        if self._sock is None or self._connection is None:
            raise redis.ConnectionError("the connection to redis is not open")
        packed = pack(*command)
        try:
            try:
                sent = self._sock.send(packed)
            except (BlockingIOError, ssl.SSLWantWriteError):
                sent = 0  # the send buffer is full for now: wait below, as for a partial send
            if sent < len(packed):
                # The send buffer is full (a large dead letter, a slow Redis): finish within a bound
                # rather than queue writes in the loop.
                self._sock.settimeout(CONNECT_TIMEOUT)
                try:
                    self._sock.sendall(packed[sent:])
                finally:
                    self._sock.setblocking(False)
        except (OSError, ValueError) as exc:
            raise redis.ConnectionError(f"writing to redis: {exc}") from exc
        if on_reply is not None:
            self._waiting.append(on_reply)

    def read(self) -> Iterator[Reply]:
        """Handle what has arrived, without waiting: one read of the socket (plus whatever TLS has
        already decrypted), then every complete reply in it. Replies nobody waits for are yielded.
        A reply cut in two by the network stays in the reader until the rest comes.

        Raises:
            redis.ConnectionError: the connection closed or broke, or Redis refused a command
                nobody waited for.
        """
        sock = self._sock
        if sock is None:
            raise redis.ConnectionError("the connection to redis is not open")
        try:
            data = sock.recv(READ_SIZE)
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                data += sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            raise redis.ConnectionError(f"reading from redis: {exc}") from exc
        if not data:
            raise redis.ConnectionError(CLOSED)
        self.last_read = time.monotonic()
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise redis.ConnectionError(f"redis sent something unreadable: {exc}") from exc
            if reply is False:
                return
            if self._waiting:
                self._waiting.popleft()(reply)
            elif isinstance(reply, ReplyError):
                raise redis.ConnectionError(f"redis refused: {reply}")
            else:
                yield reply

    def wait_readable(self, timeout: float) -> None:
        """Block until the socket is readable or ``timeout`` passes: only for a bounded last flush."""
        if self._sock is not None and timeout > 0:
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            poller.poll(timeout * 1000)

    def drain(self) -> None:
        """Handle what has arrived on a link where every command has a callback (no pushes)."""
        for reply in self.read():
            raise redis.ConnectionError(f"redis sent a reply nobody asked for: {reply!r:.100}")

    def close(self) -> None:
        """Drop the connection; safe to call more than once. Callbacks still waiting are dropped.
        On a cluster, the next :meth:`open` asks the slot map again: a connection is closed when
        it failed or was refused (MOVED), or its slot went elsewhere."""
        if self._connected_to:
            self.target.stale()
        self._drop()

    def _drop(self) -> None:
        self._waiting.clear()
        self._connected_to = ""
        if self._connection is not None:
            self._connection.disconnect()
        if self._pool is not None:
            self._pool.disconnect()
        self._sock = None
