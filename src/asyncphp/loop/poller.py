"""The event loop's readiness source: epoll with a callback per file descriptor.

A thin layer instead of ``selectors``: every job registers and drops a socket, and this keeps
that to one dict operation and one system call each way. A socket that is about to be closed is
only forgotten here: closing it removes it from the epoll set.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable

READ = select.EPOLLIN
WRITE = select.EPOLLOUT

Callback = Callable[[int], None]


class Poller:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callback] = {}

    def watch(self, fd: int, events: int, callback: Callback) -> None:
        """Call ``callback(events)`` when ``fd`` is ready for ``events``; a second call changes them."""
        if fd in self._callbacks:
            try:
                self._epoll.modify(fd, events)
            except FileNotFoundError:  # the old socket of that number was closed without forget()
                self._epoll.register(fd, events)
        else:
            self._epoll.register(fd, events)
        self._callbacks[fd] = callback

    def forget(self, fd: int, closing: bool = False) -> None:
        """Stop watching ``fd``; with ``closing``, the caller closes it next, which unregisters it."""
        if self._callbacks.pop(fd, None) is not None and not closing:
            with contextlib.suppress(OSError):  # already closed, which unregistered it
                self._epoll.unregister(fd)

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds, then run the callbacks of what is ready."""
        for fd, events in self._epoll.poll(timeout):
            callback = self._callbacks.get(fd)
            if callback is not None:  # forgotten by an earlier callback of this round
                callback(events)

    def close(self) -> None:
        self._epoll.close()
        self._callbacks.clear()
