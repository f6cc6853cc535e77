"""Blocking, one-off FastCGI exchanges for the operator's tools (``asyncphp check``/``status``):
never used by the daemon's event loop."""

from __future__ import annotations

import socket
import time

from asyncphp.settings import PoolAddress
from asyncphp.wire.fastcgi import Response, ResponseParser, encode_params, encode_request, get_values_request


def exchange(address: PoolAddress, request: bytes, timeout: float = 3.0) -> Response:
    """Send ``request`` and read the answer to its end.

    Raises:
        OSError: cannot connect, or no complete answer within ``timeout`` (socket.timeout).
        FastCGIError: the answer is not FastCGI.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(address.family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address.address)
        sock.sendall(request)
        parser = ResponseParser()
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the pool closed the connection before answering")
            response = parser.feed(data)
            if response.complete:
                return response


def get_values(address: PoolAddress, timeout: float = 3.0) -> dict[bytes, bytes]:
    """The pool's answer to FCGI_GET_VALUES (FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS)."""
    names = (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS")
    return exchange(address, get_values_request(names), timeout).values or {}


def get(address: PoolAddress, path: str, query: str = "", timeout: float = 3.0) -> Response:
    """A GET of ``path`` (a pool's ``ping.path`` or ``pm.status_path``, which php-fpm answers itself)."""
    params = {
        "GATEWAY_INTERFACE": "FastCGI/1.0", "REQUEST_METHOD": "GET", "SCRIPT_NAME": path,
        "SCRIPT_FILENAME": path, "REQUEST_URI": path + (f"?{query}" if query else ""), "QUERY_STRING": query,
        "SERVER_SOFTWARE": "asyncphp", "SERVER_PROTOCOL": "HTTP/1.1",
    }  # fmt: skip
    encoded = encode_params((k.encode(), v.encode()) for k, v in params.items())
    return exchange(address, encode_request(encoded, b""), timeout)
