"""Where messages come from: Redis pub/sub channels, read without blocking the event loop.

redis-py opens the connection (URL, AUTH or ACL user, TLS, database) and sends SUBSCRIBE. From
then on the source reads the socket itself, non-blocking, into a hiredis reader: redis-py's
``PubSub.get_message`` raises on a reply that has only partly arrived and then reconnects and
resubscribes on its own, on a socket the daemon's poller does not watch. Here a partial reply
simply waits for its next bytes, and reconnecting is the daemon's policy (a new source).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionInterface, ConnectionPool, parse_url
from redis.retry import Retry

CONNECT_TIMEOUT = 2.0  # seconds for connecting, the handshake and SUBSCRIBE: the loop waits that long at most
READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    payload: bytes


class PubSubSource:
    """One subscribed connection: open, read whatever has arrived, ping, unsubscribe, close."""

    def __init__(self, url: str, channels: Sequence[str], password_file: str | None = None) -> None:
        self.url = url
        self.channels = tuple(channels)
        self._password_file = password_file
        self._pool: ConnectionPool | None = None
        self._connection: ConnectionInterface | None = None
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._unconfirmed = set(self.channels)
        self._subscribed: set[str] = set()
        self.last_read = time.monotonic()

    def open(self) -> tuple[str, str]:
        """Connect, authenticate and send SUBSCRIBE; returns where it connected and the server's
        version. Confirmation arrives later through :meth:`read`; see :attr:`confirmed`.

        Raises:
            redis.RedisError, OSError: Redis is unreachable, refused us, or did not answer in time.
        """
        options: dict[str, Any] = {
            "socket_timeout": CONNECT_TIMEOUT,  # a Redis that accepts but never answers must not hang us
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
        }
        if self._password_file and parse_url(self.url).get("password") is None:
            options["password"] = Path(self._password_file).read_text().strip()
        self._pool = ConnectionPool.from_url(self.url, **options)
        connection = self._connection = self._pool.make_connection()
        connection.connect()
        version = "version unknown"
        try:
            connection.send_command("INFO", "server")
            info = connection.read_response()
        except redis.exceptions.NoPermissionError:
            pass  # a least-privilege ACL user may subscribe without being allowed INFO
        else:
            for line in bytes(info).splitlines():
                if line.startswith(b"redis_version:"):
                    version = "redis " + line.split(b":", 1)[1].decode()
        connection.send_command("SUBSCRIBE", *self.channels)
        # redis-py keeps the socket private; from here on it is read directly (see the module doc).
        sock = self._sock = connection._sock  # type: ignore[attr-defined]
        assert sock is not None
        sock.setblocking(False)
        self.last_read = time.monotonic()
        pieces = dict(connection.repr_pieces())
        where = pieces["path"] if "path" in pieces else f"{pieces['host']}:{pieces['port']}"
        return str(where), version

    @property
    def confirmed(self) -> bool:
        """True once Redis has acknowledged every SUBSCRIBE."""
        return not self._unconfirmed

    @property
    def unsubscribed(self) -> bool:
        """True once Redis has acknowledged the UNSUBSCRIBE sent by :meth:`unsubscribe`."""
        return not self._subscribed and not self._unconfirmed

    def fileno(self) -> int:
        if self._sock is None:
            raise redis.ConnectionError("the subscription has no open connection")
        return self._sock.fileno()

    def read(self) -> Iterator[Message]:
        """The messages that have arrived, without waiting: one read of the socket (plus whatever
        TLS has already decrypted), then every complete reply in it. A reply cut in two by the
        network stays in the reader until the rest comes.

        Raises:
            redis.ConnectionError: the connection closed, broke or carried an error reply.
        """
        sock = self._sock
        if sock is None:
            raise redis.ConnectionError("the subscription has no open connection")
        try:
            data = sock.recv(READ_SIZE)
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                data += sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            raise redis.ConnectionError(f"reading from redis: {exc}") from exc
        if not data:
            raise redis.ConnectionError("redis closed the connection")
        self.last_read = time.monotonic()
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise redis.ConnectionError(f"redis sent something unreadable: {exc}") from exc
            if reply is False:
                return
            if isinstance(reply, hiredis.ReplyError):
                raise redis.ConnectionError(f"redis refused: {reply}")
            kind, channel = reply[0], reply[1]
            if kind == b"message":
                yield Message(channel.decode("utf-8", "replace"), reply[2])
            elif kind == b"subscribe":
                name = channel.decode("utf-8", "replace")
                self._unconfirmed.discard(name)
                self._subscribed.add(name)
            elif kind == b"unsubscribe" and channel is not None:
                self._subscribed.discard(channel.decode("utf-8", "replace"))
            # b"pong" only proves the connection alive, which last_read has noted.

    def ping(self) -> None:
        """Ask for a reply, so a silently dead connection shows up as one that stays silent."""
        self._send("PING")

    def unsubscribe(self) -> None:
        """Stop receiving; messages Redis sent before its confirmation still arrive via :meth:`read`."""
        self._send("UNSUBSCRIBE")

    def _send(self, *command: str) -> None:
        if self._sock is None or self._connection is None:
            raise redis.ConnectionError("the subscription has no open connection")
        packed = b"".join(self._connection.pack_command(*command))
        try:
            sent = self._sock.send(packed)
        except OSError as exc:
            raise redis.ConnectionError(f"writing to redis: {exc}") from exc
        if sent != len(packed):  # a few bytes into an empty socket buffer: only a dead peer refuses
            raise redis.ConnectionError("redis is not reading what we send")

    def close(self) -> None:
        """Drop the connection; safe to call more than once."""
        if self._connection is not None:
            self._connection.disconnect()
        if self._pool is not None:
            self._pool.disconnect()
        self._sock = None
