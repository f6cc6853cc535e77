"""Where messages come from: Redis pub/sub channels, read without blocking the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis


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
        self._client = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=5.0)
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

    def read(self) -> list[Message]:
        """Every message already received, without waiting.

        hiredis may hold several parsed replies after one recv, so this drains until redis-py
        has nothing buffered: the selector would not wake us for data already off the socket.
        """
        messages: list[Message] = []
        while True:
            item = self._pubsub.get_message(timeout=0.0)
            if item is None:
                return messages
            kind = item["type"]
            channel = item["channel"].decode("utf-8", "replace")
            if kind == "message":
                messages.append(Message(channel, item["data"]))
            elif kind == "subscribe":
                self._unconfirmed.discard(channel)

    def close(self) -> None:
        """Drop the subscription; safe to call more than once."""
        self._pubsub.close()
        self._client.close()
