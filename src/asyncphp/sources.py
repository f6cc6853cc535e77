"""Where messages come from: Redis pub/sub channels, read without blocking the event loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

READ_BATCH = 1000  # messages per read(), so a flood cannot starve the pool sockets and signals


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    payload: bytes


class PubSubSource:
    """Subscribes to channels and yields their messages whenever the socket is readable.

    The socket has no read timeout (the original set ``default_socket_timeout=-1``): an idle
    channel is normal, and the event loop only reads when the selector says there is data.
    """

    def __init__(self, url: str, channels: Sequence[str]) -> None:
        # No redis-py retries: a silent reconnect would put the subscription on a new socket that
        # the daemon's selector does not watch. The daemon's loop owns reconnecting.
        self._client = redis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=5.0, retry=Retry(NoBackoff(), 0)
        )
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        self.channels = tuple(channels)
        self._unconfirmed = set(self.channels)

    def open(self) -> tuple[str, str]:
        """Connect and send SUBSCRIBE; returns where it connected and the server's version.

        Confirmation arrives later through :meth:`read`; see :attr:`confirmed`.
        """
        version = str(self._client.info("server")["redis_version"])
        self._pubsub.subscribe(*self.channels)
        connection = self._pubsub.connection
        assert connection is not None  # subscribe() has just made it
        pieces = dict(connection.repr_pieces())
        where = pieces["path"] if "path" in pieces else f"{pieces['host']}:{pieces['port']}"
        return str(where), version

    @property
    def confirmed(self) -> bool:
        """True once Redis has acknowledged every SUBSCRIBE."""
        return not self._unconfirmed

    def fileno(self) -> int:
        connection = self._pubsub.connection
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
        for _ in range(READ_BATCH):
            item = self._pubsub.get_message(timeout=0.0)
            if item is None:
                return
            kind = item["type"]
            if kind == "message":
                yield Message(item["channel"].decode("utf-8", "replace"), item["data"])
            elif kind == "subscribe":
                self._unconfirmed.discard(item["channel"].decode("utf-8", "replace"))

    @property
    def buffered(self) -> bool:
        """True if redis-py holds replies already off the socket (hiredis parses a whole recv at
        once), which the selector would not report as readable."""
        connection = self._pubsub.connection
        try:
            return connection is not None and bool(connection.can_read(timeout=0))
        except (redis.RedisError, OSError):
            return True  # let read() meet the error and report it

    def close(self) -> None:
        """Drop the subscription; safe to call more than once."""
        self._pubsub.close()
        self._client.close()
