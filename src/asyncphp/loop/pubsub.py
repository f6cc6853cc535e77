"""The pub/sub source: Redis channels, read without blocking the event loop.

(The durable source, Redis Streams, is in ``streams.py``.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from asyncphp.core.jobs import Message
from asyncphp.loop.redislink import Link


class PubSubSource:
    """One subscribed connection: open, hand on whatever has arrived, ping, unsubscribe, close."""

    def __init__(
        self, url: str, channels: Sequence[str], password_file: str | None, deliver: Callable[[Message], None]
    ) -> None:
        self.channels = tuple(channels)
        self._deliver = deliver
        self.link = Link(url, password_file)
        self._unconfirmed = set(self.channels)
        self._subscribed: set[str] = set()

    def open(self) -> tuple[str, str]:
        """Connect and send SUBSCRIBE; returns where it connected and the server's version.
        Confirmation arrives later, through the socket; see :attr:`ready`."""
        self._unconfirmed, self._subscribed = set(self.channels), set()
        where = self.link.open()
        self.link.start()
        self.link.send("SUBSCRIBE", *self.channels)
        return where

    def watch(self) -> list[tuple[int, Callable[[], None]]]:
        return [(self.link.fileno(), self._read)]

    @property
    def ready(self) -> bool:
        """True once Redis has acknowledged every SUBSCRIBE."""
        return not self._unconfirmed

    @property
    def unsubscribed(self) -> bool:
        """True once Redis has acknowledged the UNSUBSCRIBE sent by :meth:`stop`."""
        return not self._subscribed and not self._unconfirmed

    @property
    def last_read(self) -> float:
        return self.link.last_read

    def _read(self) -> None:
        """Hand on the messages that have arrived (see :meth:`Link.read`).

        Raises:
            redis.ConnectionError: the connection closed, broke or carried an error reply.
        """
        for reply in self.link.read():
            if not isinstance(reply, list):
                continue  # PONG: it only proves the connection alive, which last_read has noted
            kind, channel = reply[0], reply[1]
            # A pong has no channel, and neither has an UNSUBSCRIBE reply when nothing was left.
            name = channel.decode("utf-8", "replace") if channel is not None else ""
            if kind == b"message":
                self._deliver(Message(name, reply[2]))
            elif kind == b"subscribe":
                self._unconfirmed.discard(name)
                self._subscribed.add(name)
            elif kind == b"unsubscribe":
                self._subscribed.discard(name)
            # [b"pong", b""], the subscribed form of PONG, likewise.

    def ping(self) -> None:
        """Ask for a reply, so a silently dead connection shows up as one that stays silent."""
        self.link.send("PING")

    def stop(self) -> None:
        """Stop receiving; messages Redis sent before its confirmation are still handed on."""
        self.link.send("UNSUBSCRIBE")

    def close(self) -> None:
        """Drop the connection; safe to call more than once."""
        self.link.close()
