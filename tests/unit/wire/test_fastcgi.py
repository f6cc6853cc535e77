"""The FastCGI codec, cross-checked against flup6's own Record reader and pair decoder."""

from __future__ import annotations

import socket
import struct

import pytest
from flup.server.fcgi_base import (
    FCGI_BEGIN_REQUEST,
    FCGI_END_REQUEST,
    FCGI_KEEP_CONN,
    FCGI_OVERLOADED,
    FCGI_PARAMS,
    FCGI_RESPONDER,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    Record,
)

from asyncphp.wire.fastcgi import (
    MAX_CONTENT,
    FastCGIError,
    ResponseParser,
    encode_params,
    encode_request,
    parse_pairs,
    record,
)


def flup_records(data: bytes) -> list[Record]:
    """Decode ``data`` with flup's own Record.read, over a real socket pair."""
    a, b = socket.socketpair()
    records = []
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        while True:
            rec = Record()
            try:
                rec.read(b)
            except EOFError:
                return records
            records.append(rec)


def test_record_header_and_content() -> None:
    (rec,) = flup_records(record(FCGI_STDIN, b"hello"))
    assert (rec.type, rec.requestId, rec.contentData) == (FCGI_STDIN, 1, b"hello")


def test_record_refuses_oversized_content() -> None:
    with pytest.raises(ValueError, match="65535"):
        record(FCGI_STDIN, b"x" * (MAX_CONTENT + 1))


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 65535 - 400])
def test_pairs_short_and_long(size: int) -> None:
    params = [(b"SHORT", b"v"), (b"N" * min(size, 300) or b"E", b"V" * size)]
    records = flup_records(encode_params(params))
    decoded = {}
    for rec in records:
        assert rec.type == FCGI_PARAMS
        decoded.update(parse_pairs(rec.contentData))
    assert decoded == dict(params)


def test_pair_lengths_use_four_bytes_from_128() -> None:
    (rec,) = flup_records(encode_params([(b"K", b"v" * 128)]))
    assert rec.contentData[:5] == b"\x01" + struct.pack("!L", 128 | 0x80000000)


def test_params_are_packed_without_splitting_a_pair() -> None:
    params = [(b"P%d" % i, b"v" * 30000) for i in range(5)]
    records = flup_records(encode_params(params))
    assert len(records) == 3  # two pairs fit a record, the third would not
    merged = {}
    for rec in records:
        assert rec.contentLength <= MAX_CONTENT
        merged.update(parse_pairs(rec.contentData))  # each record decodes on its own, as php-fpm does
    assert merged == dict(params)


def test_a_pair_over_65535_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="php-fpm"):
        encode_params([(b"HUGE", b"x" * 70000)])


@pytest.mark.parametrize("size", [0, 10, 65535, 65536, 200_000])
def test_request_layout(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    records = flup_records(encode_request(encode_params([(b"A", b"1")]), body))
    begin, params, params_end, *stdin = records
    assert begin.type == FCGI_BEGIN_REQUEST
    role, flags = struct.unpack("!HB5x", begin.contentData)
    assert role == FCGI_RESPONDER
    assert not flags & FCGI_KEEP_CONN
    assert (params.type, parse_pairs(params.contentData)) == (FCGI_PARAMS, {b"A": b"1"})
    assert (params_end.type, params_end.contentLength) == (FCGI_PARAMS, 0)
    assert all(r.type == FCGI_STDIN and r.contentLength <= MAX_CONTENT for r in stdin)
    assert stdin[-1].contentLength == 0
    assert b"".join(r.contentData for r in stdin) == body
    assert len(stdin) == -(-size // MAX_CONTENT) + 1


def response(stdout: bytes, stderr: bytes = b"", app: int = 0, protocol: int = 0, padding: int = 0) -> bytes:
    def rec(kind: int, content: bytes) -> bytes:
        return struct.pack("!BBHHBx", 1, kind, 1, len(content), padding) + content + b"\0" * padding

    out = rec(FCGI_STDOUT, stdout) if stdout else b""
    err = rec(FCGI_STDERR, stderr) if stderr else b""
    return out + err + rec(FCGI_END_REQUEST, struct.pack("!LB3x", app, protocol))


def test_parser_reads_status_and_stderr_fed_byte_by_byte() -> None:
    data = response(
        b"Status: 500 Internal Server Error\r\nContent-type: text/html\r\n\r\nbody", b"PHP Fatal", padding=3
    )
    parser = ResponseParser()
    for i in range(len(data)):
        resp = parser.feed(data[i : i + 1])
        assert resp.complete == (i == len(data) - 1)
    assert (resp.http_status, resp.stderr, resp.app_status, resp.protocol_status) == (500, b"PHP Fatal", 0, 0)


def test_parser_defaults_to_200_and_counts_large_output() -> None:
    big = b"Content-type: text/html; charset=UTF-8\r\n\r\n" + b"x" * 100_000
    data = b"".join(record(FCGI_STDOUT, big[i : i + MAX_CONTENT]) for i in range(0, len(big), MAX_CONTENT))
    resp = ResponseParser().feed(data + response(b""))
    assert resp.http_status == 200
    assert resp.stdout_bytes == len(big)
    assert len(resp.head) == ResponseParser.HEAD_LIMIT


def test_parser_reports_overloaded() -> None:
    resp = ResponseParser().feed(response(b"", protocol=FCGI_OVERLOADED))
    assert resp.complete and resp.protocol_status == FCGI_OVERLOADED


def test_status_header_only_counts_in_the_head() -> None:
    resp = ResponseParser().feed(response(b"X-A: b\r\n\r\nStatus: 404 in the body"))
    assert resp.http_status == 200


def test_parser_rejects_what_is_not_fastcgi() -> None:
    with pytest.raises(FastCGIError, match="version"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(FastCGIError, match="END_REQUEST"):
        ResponseParser().feed(struct.pack("!BBHHBx", 1, FCGI_END_REQUEST, 1, 3, 0) + b"abc")
