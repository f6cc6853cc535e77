"""The pub/sub source: Redis channels, read without blocking the event loop.

On a cluster whose URL says ``pubsub=sharded`` (the default), channels are read with SSUBSCRIBE
from the primary that owns their slot, one source per slot; when that node stops serving the slot
(a failover, a migration), Redis ends the subscription with SUNSUBSCRIBE, and the source
connects again to the slot's primary then.

(The durable source, Redis Streams, is in ``streams.py``.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from asyncphp.core.jobs import Message
from asyncphp.loop.redislink import CLOSED, Link
from asyncphp.redisurl import Target
from asyncphp.wire import replies


@dataclass(frozen=True)
class Kinds:
    """The push kinds (and command names) of one flavour of pub/sub."""

    subscribe: bytes
    message: bytes
    unsubscribe: bytes


CLASSIC = Kinds(b"subscribe", b"message", b"unsubscribe")
SHARDED = Kinds(b"ssubscribe", b"smessage", b"sunsubscribe")


class PubSubSource:
    """One subscribed connection: open, hand on whatever has arrived, ping, unsubscribe, close."""

    announce = True

    def __init__(
        self,
        target: Target,
        channels: Sequence[str],
        deliver: Callable[[Message], None],
        sharded: bool = False,
    ) -> None:
        """On a cluster, the link goes to the primary of the first channel's slot; ``sharded``: the
        channels share that slot, and are read with SSUBSCRIBE."""
        self.channels = tuple(channels)
        self.what = ", ".join(self.channels)
        self._deliver = deliver
        self._kinds = SHARDED if sharded else CLASSIC
        self.link = Link(target, route=self.channels[0])
        self._unconfirmed = set(self.channels)
        self._subscribed: set[str] = set()
        self._stopping = False
        self._limit = (
            "not read"  # the server's pub/sub output buffer limit, for a line saying why we were cut off
        )

    def open(self) -> tuple[str, str]:
        """Connect and send SUBSCRIBE; returns where it connected and the server's version.
        Confirmation arrives later, through the socket; see :attr:`ready`."""
        self._unconfirmed, self._subscribed = set(self.channels), set()
        where = self.link.open()
        try:
            self._limit = (
                replies.pubsub_output_limit(self.link.call("CONFIG", "GET", "client-output-buffer-limit"))
                or "unknown"
            )
        except redis.ResponseError as exc:  # CONFIG may be renamed away or denied by an ACL
            self._limit = f"not readable: {exc}"
        self.link.start()
        self.link.send(self._kinds.subscribe.decode().upper(), *self.channels)
        return where

    def watch(self) -> list[tuple[int, Callable[[], None]]]:
        return [(self.link.fileno(), self._read)]

    @property
    def ready(self) -> bool:
        """True once Redis has acknowledged every SUBSCRIBE."""
        return not self._unconfirmed

    @property
    def settled(self) -> bool:
        """Once stopping: Redis has confirmed the UNSUBSCRIBE, so nothing more will come."""
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
            kinds = self._kinds
            if kind == kinds.message:
                self._deliver(Message(name, reply[2]))
            elif kind == kinds.subscribe:
                self._unconfirmed.discard(name)
                self._subscribed.add(name)
            elif kind == kinds.unsubscribe:
                self._subscribed.discard(name)
                if not self._stopping and kinds is SHARDED:
                    raise redis.ConnectionError(
                        f"redis no longer serves channel {name} on this node (its slot failed over or moved)"
                    )
            # [b"pong", b""], the subscribed form of PONG, likewise.

    def ping(self) -> None:
        """Ask for a reply, so a silently dead connection shows up as one that stays silent."""
        self.link.send("PING")

    def misplaced(self) -> bool:
        return self.link.misplaced()

    def tick(self, now: float, free: int) -> None:
        pass  # everything arrives through the socket

    def wake_at(self, free: int) -> float:
        return math.inf

    def stop(self) -> None:
        """Stop receiving; messages Redis sent before its confirmation are still handed on."""
        self._stopping = True
        if self._subscribed or self._unconfirmed:  # else not connected: nothing will come
            self.link.send(self._kinds.unsubscribe.decode().upper(), *self.channels)

    def leave(self) -> None:
        pass

    def explain(self, reason: str) -> str:
        if reason != CLOSED or self._stopping:
            return reason
        return (
            f"{reason}; unless it stopped, restarted or was told to, the likely cause is its pub/sub output "
            f"buffer limit ({self._limit}): this daemon read more slowly than messages came, and what was "
            "buffered for it is lost. The durable mode (--stream) keeps messages in Redis instead"
        )

    def status(self) -> str:
        return ""

    def close(self) -> None:
        """Drop the connection; safe to call more than once."""
        self.link.close()
        self._subscribed.clear()
        self._unconfirmed.clear()


class DueNotices(PubSubSource):
    """The ``<stream>:delayed`` channels, on which the script that adds a delayed job announces it
    when it is due before all others, so that the daemons need not poll. Optional: refused by an
    ACL, it is said once, the daemon goes on (a refresh moves such jobs, a little later), and it
    does not hold up READY."""

    announce = False

    def __init__(
        self,
        target: Target,
        channels: Sequence[str],
        heard: Callable[[Message], None],
        connected: Callable[[], None],
        log: logging.Logger,
    ) -> None:
        super().__init__(target, channels, heard)
        self.what = f"delayed-job notices ({', '.join(self.channels)})"
        self._connected = connected
        self._log = log
        self.refused = False

    def open(self) -> tuple[str, str]:
        where = super().open()
        self._connected()  # what was announced while it was away is missed: look now
        return where

    def _read(self) -> None:
        try:
            super()._read()
        except redis.ConnectionError as exc:
            if not str(exc).startswith("redis refused: NOPERM"):
                raise
            if not self.refused:
                self.refused = True
                self._log.error(
                    "redis refused the subscription to %s (%s): delayed jobs due before all others are "
                    "moved up to 2 s late; allow the channels to this daemon's user (&<stream>:delayed)",
                    ", ".join(self.channels), exc,
                )  # fmt: skip
            self._unconfirmed.clear()

    @property
    def ready(self) -> bool:
        return self.refused or super().ready

    def explain(self, reason: str) -> str:
        return reason  # nothing is lost with it: the refresh moves what it would have announced
