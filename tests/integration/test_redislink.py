"""The Redis link on a real server: a send buffer that is full for a moment is not a lost connection."""

from __future__ import annotations

import signal
import socket
import threading
import time

from asyncphp.dev.sandbox import RedisServer
from asyncphp.loop.redislink import Link, Reply
from asyncphp.redisurl import Target

VALUE = b"v" * 65536


class SendSpy:
    """The link's own socket, unchanged, counting how each of the link's sends ended."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.whole = 0  # the kernel took the whole command
        self.partial = 0  # it took part of it: the rest had to wait
        self.first_byte = 0  # it took nothing: EAGAIN on the first byte

    def send(self, data: bytes) -> int:
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            self.first_byte += 1
            raise
        if sent < len(data):
            self.partial += 1
        else:
            self.whole += 1
        return sent

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def fill(sock: socket.socket) -> int:
    """Write bare newlines to the socket until the kernel takes no more; returns how many went in.
    Each newline is an empty inline command, which Redis skips without a reply, so the stream stays
    valid wherever the kernel cuts it."""
    filler, taken = b"\n" * 65536, 0
    for _ in range(10_000):  # at most 640 MB; the buffers hold a few MB
        try:
            taken += sock.send(filler)
        except BlockingIOError:
            return taken
    raise AssertionError(f"the send buffer never filled ({taken} bytes taken)")


def wait_for_replies(link: Link, replies: list[Reply], count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(replies) < count and time.monotonic() < deadline:
        link.wait_readable(0.5)
        link.drain()
    assert len(replies) == count, f"{len(replies)} replies of {count}"


def test_a_full_send_buffer_makes_a_send_wait_instead_of_dropping_the_connection(
    redis_server: RedisServer,
) -> None:
    # Old behaviour: a send that found the kernel's buffer full before its first byte (EAGAIN)
    # raised, and the connection was dropped with every reply still waited for; only a send that
    # got part of its command in waited for the rest.
    link = Link(Target(redis_server.url))
    link.open()
    link.start()
    spy = SendSpy(link._sock)  # type: ignore[arg-type]  # the link's private socket, watched
    link._sock = spy  # type: ignore[assignment]
    replies: list[Reply] = []
    sent = 0

    def resume_in(seconds: float) -> threading.Timer:
        # Well within the 2 s a waiting send is allowed.
        timer = threading.Timer(seconds, redis_server.process.send_signal, (signal.SIGCONT,))
        timer.start()
        return timer

    timer = None
    try:
        # 1. Redis stopped, 64 kB SETs until one finds the buffers full. On Linux that send is
        # partial (the kernel's last buffer still had room for part of it) and waits for the rest.
        redis_server.process.send_signal(signal.SIGSTOP)
        timer = resume_in(0.5)
        while spy.partial + spy.first_byte == 0 and sent < 1000:
            link.send("SET", f"k{sent}", VALUE, on_reply=replies.append)
            sent += 1
        timer.join()
        assert spy.partial + spy.first_byte == 1, "the buffers never filled: nothing was tested"
        wait_for_replies(link, replies, sent)

        # 2. EAGAIN on the first byte. Commands alone end in a partial send, as above, so the
        # buffer is filled to the last byte first, with newlines written to the same socket: the
        # kernel then refused one, and with Redis stopped nothing can make room before the link's
        # next send, which therefore gets EAGAIN before its first byte (the spy counts it).
        redis_server.process.send_signal(signal.SIGSTOP)
        filled = fill(spy.sock)
        timer = resume_in(0.5)
        refused = spy.first_byte
        link.send("SET", "last", VALUE, on_reply=replies.append)
        sent += 1
        assert spy.first_byte == refused + 1, "the send did not meet EAGAIN on its first byte"
        timer.join()
    finally:
        if timer is not None:
            timer.cancel()
        redis_server.process.send_signal(signal.SIGCONT)

    try:
        link.send("GET", "last", on_reply=replies.append)
        wait_for_replies(link, replies, sent + 1)
        assert replies == [b"OK"] * sent + [VALUE]
        assert link.waiting == 0
        link.send("PING", on_reply=replies.append)  # still open, and in step
        wait_for_replies(link, replies, sent + 2)
        assert replies[-1] == b"PONG"
    finally:
        link.close()
    print(
        f"\n{sent} SETs of 64 kB: {spy.partial} partial send; then {filled:,} bytes filled the buffer "
        f"and the next send met EAGAIN on its first byte"
    )
