"""FastCGI requests as bytes and responses from bytes, on flup6's codec (no I/O here).

One request per connection, so the request id on the wire is always 1 and php-fpm closes the
connection after FCGI_END_REQUEST (FCGI_KEEP_CONN would bind a child to an idle connection).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST,
    FCGI_END_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_HEADER_LEN,
    FCGI_OVERLOADED,
    FCGI_PARAMS,
    FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_VERSION_1,
    FCGI_BeginRequestBody,
    FCGI_EndRequestBody,
    FCGI_Header,
    decode_pair,
    encode_pair,
)

__all__ = [
    "FCGI_OVERLOADED",
    "FCGI_REQUEST_COMPLETE",
    "MAX_CONTENT",
    "FastCGIError",
    "Response",
    "ResponseParser",
    "encode_params",
    "encode_request",
    "get_values_request",
    "parse_pairs",
    "record",
]

MAX_CONTENT = 0xFFFF  # a record's contentLength is 16 bits
REQUEST_ID = 1

_HEADER = struct.Struct(FCGI_Header)
_END_BODY = struct.Struct(FCGI_EndRequestBody)
_BEGIN_RESPONDER = struct.pack(FCGI_BeginRequestBody, FCGI_RESPONDER, 0)  # flags 0: no KEEP_CONN


def record(kind: int, content: bytes = b"", request_id: int = REQUEST_ID) -> bytes:
    """One record, unpadded (padding is optional, and php-fpm rejects content+padding > 65535)."""
    if len(content) > MAX_CONTENT:
        raise ValueError(f"FastCGI record content of {len(content)} bytes exceeds {MAX_CONTENT}")
    return _HEADER.pack(FCGI_VERSION_1, kind, request_id, len(content), 0) + content


def _stream(kind: int, content: bytes) -> bytes:
    chunks = [record(kind, content[i : i + MAX_CONTENT]) for i in range(0, len(content), MAX_CONTENT)]
    return b"".join(chunks) + record(kind)  # the empty record ends the stream


def encode_params(params: Iterable[tuple[bytes, bytes]]) -> bytes:
    """PARAMS records, without the empty one that ends the stream.

    php-fpm decodes each PARAMS record on its own, so a pair never straddles two records.
    """
    records: list[bytes] = []
    pending = b""
    for name, value in params:
        pair: bytes = encode_pair(name, value)
        if len(pair) > MAX_CONTENT:
            raise ValueError(
                f"FastCGI param {name[:40]!r} is {len(pair)} bytes encoded; php-fpm takes {MAX_CONTENT}"
            )
        if len(pending) + len(pair) > MAX_CONTENT:
            records.append(record(FCGI_PARAMS, pending))
            pending = b""
        pending += pair
    if pending:
        records.append(record(FCGI_PARAMS, pending))
    return b"".join(records)


def encode_request(params: bytes, stdin: bytes) -> bytes:
    """A whole RESPONDER request: BEGIN_REQUEST, PARAMS, STDIN, ready for one ``sendall``.

    ``params`` comes from :func:`encode_params`, so constant parameters can be encoded once.
    """
    return b"".join(
        (
            record(FCGI_BEGIN_REQUEST, _BEGIN_RESPONDER),
            params,
            record(FCGI_PARAMS),
            _stream(FCGI_STDIN, stdin),
        )
    )


def get_values_request(names: Iterable[bytes]) -> bytes:
    """An FCGI_GET_VALUES management record asking for ``names`` (FCGI_MAX_CONNS …)."""
    return record(FCGI_GET_VALUES, b"".join(encode_pair(name, b"") for name in names), request_id=0)


def parse_pairs(content: bytes) -> dict[bytes, bytes]:
    """Name-value pairs from a PARAMS or GET_VALUES_RESULT record's content."""
    pairs: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(content):
        pos, (name, value) = decode_pair(content, pos)
        pairs[name] = value
    return pairs


class FastCGIError(ValueError):
    """The peer sent something that is not a FastCGI response."""


@dataclass
class Response:
    """What came back for one request, kept small: output is counted, only its head is kept."""

    head: bytes = b""
    stdout_bytes: int = 0
    stderr: bytes = b""
    stderr_bytes: int = 0
    app_status: int | None = None
    protocol_status: int | None = None
    values: dict[bytes, bytes] | None = None  # the answer to FCGI_GET_VALUES
    # The head's headers by lower-case name, parsed at the first look: the status and the worker's
    # asks (core/outcome) are several looks per response.
    _headers: dict[bytes, bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """True once FCGI_END_REQUEST (or, for FCGI_GET_VALUES, its result) has arrived."""
        return self.protocol_status is not None or self.values is not None

    @property
    def http_status(self) -> int:
        """The worker's HTTP status: php-fpm sends a ``Status:`` header only when it is not 200."""
        code = self.header(b"status")[:3]
        return int(code) if code.isdigit() else 200

    def header(self, name: bytes) -> bytes:
        """The value of the worker's response header ``name`` (lower case), stripped; b"" when
        it sent none."""
        headers = self._headers
        if headers is None:
            headers = {}
            end = self.head.find(b"\r\n\r\n")
            for line in (self.head if end < 0 else self.head[:end]).split(b"\r\n"):
                key, sep, value = line.partition(b":")
                if sep:
                    headers.setdefault(key.strip().lower(), value.strip())  # the first of a name
            self._headers = headers
        return headers.get(name, b"")


class ResponseParser:
    """Feeds on whatever ``recv`` returned and fills a :class:`Response`."""

    # Final: a class constant compiled too (mypyc makes an unannotated one a per-instance default).
    HEAD_LIMIT: Final = 8192
    STDERR_LIMIT: Final = 8192

    def __init__(self) -> None:
        self.response = Response()
        self._buffer = b""

    def feed(self, data: bytes) -> Response:
        """Consume ``data``; returns the response, ``complete`` once the request has ended."""
        buffer = self._buffer + data if self._buffer else data
        pos, size = 0, len(buffer)
        response = self.response
        while size - pos >= FCGI_HEADER_LEN:
            version, kind, _, length, padding = _HEADER.unpack_from(buffer, pos)
            if version != FCGI_VERSION_1:
                raise FastCGIError(f"record version {version}, not {FCGI_VERSION_1}")
            end = pos + FCGI_HEADER_LEN + length
            if size < end + padding:
                break
            content = buffer[pos + FCGI_HEADER_LEN : end]
            pos = end + padding
            if kind == FCGI_STDOUT:
                if response.stdout_bytes < self.HEAD_LIMIT:
                    response.head += content[: self.HEAD_LIMIT - response.stdout_bytes]
                    response._headers = None  # read again at the next look
                response.stdout_bytes += length
            elif kind == FCGI_STDERR:
                if response.stderr_bytes < self.STDERR_LIMIT:
                    response.stderr += content[: self.STDERR_LIMIT - response.stderr_bytes]
                response.stderr_bytes += length
            elif kind == FCGI_GET_VALUES_RESULT:
                response.values = parse_pairs(content)
            elif kind == FCGI_END_REQUEST:
                if length != _END_BODY.size:
                    raise FastCGIError(f"END_REQUEST body of {length} bytes, not {_END_BODY.size}")
                response.app_status, response.protocol_status = _END_BODY.unpack(content)
        self._buffer = buffer[pos:]
        return response
