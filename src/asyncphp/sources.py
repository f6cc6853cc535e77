"""Where messages come from: Redis pub/sub channels, read without blocking the event loop.

A :class:`PubSubSource` is one connection's life: open, subscribe, read, unsubscribe, close.
Reconnecting is the daemon's policy, done by opening a new source.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

READ_BATCH = 1000  # messages per read(), so a flood cannot starve the pool sockets and signals
CONNECT_TIMEOUT = 2.0  # seconds; the loop waits this long at most for an unreachable Redis


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    payload: bytes


class PubSubSource:
    """Subscribes to channels and yields their messages whenever the socket is readable.

    The socket has no read timeout (the original set ``default_socket_timeout=-1``): an idle
    channel is normal, and the event loop only reads when the selector says there is data. A dead
    peer is found by :meth:`ping` and TCP keepalive instead.
    """

    def __init__(self, url: str, channels: Sequence[str], password_file: str | None = None) -> None:
        self.url = url
        self.channels = tuple(channels)
        self._password_file = password_file
        self._client: redis.Redis | None = None
        self._pubsub: redis.client.PubSub | None = None
        self._unconfirmed = set(self.channels)
        self._subscribed: set[str] = set()
        self.last_read = time.monotonic()

    def open(self) -> tuple[str, str]:
        """Connect and send SUBSCRIBE; returns where it connected and the server's version.

        Confirmation arrives later through :meth:`read`; see :attr:`confirmed`.
        """
        extra = {}
        if self._password_file and redis.connection.parse_url(self.url).get("password") is None:  # type: ignore[no-untyped-call]
            extra["password"] = Path(self._password_file).read_text().strip()
        # No redis-py retries: a silent reconnect would put the subscription on a new socket that
        # the daemon's selector does not watch. The daemon's loop owns reconnecting.
        self._client = redis.Redis.from_url(
            self.url,
            socket_timeout=None,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            **extra,
        )
        version = str(self._client.info("server")["redis_version"])
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(*self.channels)
        connection = self._pubsub.connection
        assert connection is not None  # subscribe() has just made it
        pieces = dict(connection.repr_pieces())
        where = pieces["path"] if "path" in pieces else f"{pieces['host']}:{pieces['port']}"
        self.last_read = time.monotonic()
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
        connection = self._pubsub.connection if self._pubsub else None
        # redis-py keeps its socket private; the daemon needs it to select on Redis and on the
        # pool's sockets in one loop, so the reading itself still goes through redis-py.
        sock = getattr(connection, "_sock", None)
        if sock is None:
            raise redis.ConnectionError("the subscription has no open connection")
        return int(sock.fileno())

    def read(self) -> Iterator[Message]:
        """The messages already received, up to READ_BATCH, without waiting.

        A generator, so that each message is handed on before the next read: if the connection
        breaks mid-batch, the messages before the break are not lost with it.
        """
        assert self._pubsub is not None
        for _ in range(READ_BATCH):
            item = self._pubsub.get_message(timeout=0.0)
            if item is None:
                return
            self.last_read = time.monotonic()
            kind = item["type"]
            # A pong has no channel, and neither has an UNSUBSCRIBE reply when nothing was left.
            channel = item["channel"].decode("utf-8", "replace") if item["channel"] is not None else ""
            if kind == "message":
                yield Message(channel, item["data"])
            elif kind == "subscribe":
                self._unconfirmed.discard(channel)
                self._subscribed.add(channel)
            elif kind == "unsubscribe":
                self._subscribed.discard(channel)

    @property
    def buffered(self) -> bool:
        """True if redis-py holds replies already off the socket (hiredis parses a whole recv at
        once), which the selector would not report as readable."""
        connection = self._pubsub.connection if self._pubsub else None
        try:
            return connection is not None and bool(connection.can_read(timeout=0))
        except (redis.RedisError, OSError):
            return True  # let read() meet the error and report it

    def ping(self) -> None:
        """Ask for a reply, so a silently dead connection shows up as one that stays silent."""
        assert self._pubsub is not None
        self._pubsub.ping()

    def unsubscribe(self) -> None:
        """Stop receiving; messages Redis sent before its confirmation still arrive via :meth:`read`."""
        if self._pubsub is not None:
            self._pubsub.unsubscribe()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Drop the connection; safe to call more than once."""
        if self._pubsub is not None:
            self._pubsub.close()
        if self._client is not None:
            self._client.close()
