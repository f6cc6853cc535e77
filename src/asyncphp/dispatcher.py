"""Hands jobs to the pool, one connection each, and reads every response in the background.

Nothing here blocks: sockets are non-blocking and registered with the daemon's selector, whose
loop calls back into the exchange that owns the socket. A worker's output is always read to the
end, because PHP aborts a script that writes to a connection its client has closed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import time
from dataclasses import dataclass

from asyncphp.fastcgi import FCGI_REQUEST_COMPLETE, FastCGIError, Response, ResponseParser
from asyncphp.logfmt import preview
from asyncphp.settings import PoolAddress

READ_SIZE = 65536
STDERR_PREVIEW = 600  # characters: enough for a PHP fatal error with its file and line


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    channel: str
    body: bytes


class Exchange:
    """One job's connection: connect, send the request, read the response to its end."""

    __slots__ = ("_connecting", "_owner", "_parser", "_pending", "_sock", "job", "started")

    def __init__(self, job: Job, request: bytes, owner: Dispatcher) -> None:
        self.job = job
        self.started = time.monotonic()
        self._owner = owner
        self._pending = memoryview(request)
        self._connecting = False
        self._parser = ResponseParser()
        self._sock: socket.socket | None = None

    def start(self, address: PoolAddress) -> None:
        try:
            sock = self._sock = socket.socket(address.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect(address.address)
        except BlockingIOError as exc:
            if exc.errno != errno.EINPROGRESS:
                # On a unix socket EAGAIN means the pool's listen backlog is full.
                self.fail(f"cannot connect to {address}: listen backlog full ({exc.strerror})")
                return
            self._connecting = True  # TCP: the outcome comes as writability
        except OSError as exc:
            self.fail(f"cannot connect to {address}: {exc.strerror or exc}")
            return
        self._owner.selector.register(sock, selectors.EVENT_WRITE, self)
        if not self._connecting:
            self._send()

    def __call__(self, mask: int) -> None:
        """The selector's callback: the socket is ready for what this exchange waits on."""
        if self._pending:
            self._send()
        else:
            self._receive()

    def _send(self) -> None:
        assert self._sock is not None
        try:
            if self._connecting:
                self._connecting = False
                err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect failed: {errno.errorcode.get(err, err)}")
            sent = self._sock.send(self._pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"cannot send the request: {exc.strerror or exc}")
            return
        self._pending = self._pending[sent:]
        if not self._pending:
            self._owner.selector.modify(self._sock, selectors.EVENT_READ, self)
            self._owner.sent(self)

    def _receive(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"connection lost mid-response: {exc.strerror or exc}")
            return
        if not data:
            self.fail("the pool closed the connection before the end of the request")
            return
        try:
            response = self._parser.feed(data)
        except FastCGIError as exc:
            self.fail(f"the pool's answer is not FastCGI: {exc}")
            return
        if response.complete:
            self._close()
            self._owner.finished(self, response, None)

    def fail(self, reason: str) -> None:
        """End this exchange as failed, closing its socket."""
        self._close()
        self._owner.finished(self, self._parser.response, reason)

    def _close(self) -> None:
        if self._sock is None:
            return
        with contextlib.suppress(KeyError):  # never registered: the connect failed at once
            self._owner.selector.unregister(self._sock)
        self._sock.close()
        self._sock = None


class Dispatcher:
    """Starts exchanges, tracks the ones in flight, logs one line per job's outcome."""

    def __init__(self, selector: selectors.BaseSelector, address: PoolAddress, log: logging.Logger) -> None:
        self.selector = selector
        self._address = address
        self._log = log
        self._open: set[Exchange] = set()
        self.dispatched = 0  # requests written whole to the pool
        self.completed = 0  # responses that ended well
        self.failed = 0  # not delivered, or the worker failed

    @property
    def in_flight(self) -> int:
        return len(self._open)

    def submit(self, job: Job, request: bytes) -> None:
        """Hand ``job`` to the pool without waiting; its outcome is logged when it ends."""
        exchange = Exchange(job, request, self)
        self._open.add(exchange)
        exchange.start(self._address)

    def close(self) -> None:
        """Give up on whatever is still in flight; each is logged as failed."""
        for exchange in list(self._open):
            exchange.fail("abandoned at shutdown")

    def sent(self, exchange: Exchange) -> None:
        self.dispatched += 1
        self._log.info("Spawned process with ID: %d", exchange.job.id)

    def finished(self, exchange: Exchange, response: Response, error: str | None) -> None:
        self._open.discard(exchange)
        job = exchange.job
        elapsed_ms = (time.monotonic() - exchange.started) * 1000
        stderr = f"; stderr {preview(response.stderr, STDERR_PREVIEW)}" if response.stderr_bytes else ""
        if error is not None:
            self.failed += 1
            self._log.error(
                "job %d on %s failed after %.1f ms: %s%s; message %s",
                job.id,
                job.channel,
                elapsed_ms,
                error,
                stderr,
                preview(job.body),
            )
            return
        problem = _worker_problem(response)
        if problem is None:
            self.completed += 1
            self._log.info(
                "job %d on %s: status %d in %.1f ms%s",
                job.id,
                job.channel,
                response.http_status,
                elapsed_ms,
                stderr,
            )
        else:
            self.failed += 1
            self._log.error(
                "job %d on %s: status %d in %.1f ms, %s%s",
                job.id,
                job.channel,
                response.http_status,
                elapsed_ms,
                problem,
                stderr,
            )


def _worker_problem(response: Response) -> str | None:
    if response.protocol_status != FCGI_REQUEST_COMPLETE:
        return f"the pool refused it (FastCGI protocol status {response.protocol_status})"
    if response.http_status >= 400:
        return "the worker failed"
    if response.app_status:
        return f"the worker exited with status {response.app_status}"
    return None
