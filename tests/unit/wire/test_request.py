from __future__ import annotations

from flup.server.fcgi_base import FCGI_PARAMS, FCGI_STDIN

from asyncphp.version import __version__
from asyncphp.wire.fastcgi import parse_pairs
from asyncphp.wire.meta import Meta
from asyncphp.wire.request import RequestBuilder
from tests.unit.wire.test_fastcgi import flup_records


def params(request: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for rec in flup_records(request):
        if rec.type == FCGI_PARAMS:
            found.update(parse_pairs(rec.contentData))
    return found


def test_cgi_params_a_php_worker_expects() -> None:
    records = flup_records(RequestBuilder("/srv/app/worker.php").build(7, "commands", b"a=1&b=2"))
    params: dict[bytes, bytes] = {}
    for rec in records:
        if rec.type == FCGI_PARAMS:
            params.update(parse_pairs(rec.contentData))
    assert params[b"REQUEST_METHOD"] == b"POST"
    assert params[b"SCRIPT_FILENAME"] == b"/srv/app/worker.php"
    assert params[b"SCRIPT_NAME"] == params[b"REQUEST_URI"] == b"/worker.php"
    assert params[b"CONTENT_TYPE"] == b"application/x-www-form-urlencoded"
    assert params[b"CONTENT_LENGTH"] == b"7"
    assert params[b"SERVER_SOFTWARE"] == f"asyncphp/{__version__}".encode()
    assert params[b"ASYNCPHP_REQUEST_ID"] == b"7"
    assert params[b"ASYNCPHP_CHANNEL"] == b"commands"
    assert b"".join(r.contentData for r in records if r.type == FCGI_STDIN) == b"a=1&b=2"


def test_a_delayed_job_s_due_time_reaches_the_worker() -> None:
    builder = RequestBuilder("/srv/app/worker.php")

    delayed = params(builder.build(1, "mail", b"", 1, "1-0", "1795984306.916"))
    assert delayed[b"ASYNCPHP_DUE_AT"] == b"1795984306.916"
    assert b"ASYNCPHP_DUE_AT" not in params(builder.build(1, "mail", b"", 1, "1-0")), "only when delayed"


def test_what_the_publisher_said_reaches_the_worker_whole() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    builder = RequestBuilder("/srv/app/worker.php")
    sent = params(builder.build(1, "mail", b"", meta=Meta("2026-12-07.1", traceparent, "vendor=1")))
    assert sent[b"ASYNCPHP_RELEASE"] == b"2026-12-07.1"
    assert (sent[b"HTTP_TRACEPARENT"], sent[b"HTTP_TRACESTATE"]) == (traceparent.encode(), b"vendor=1")
    bare = params(builder.build(1, "mail", b""))
    assert not {b"ASYNCPHP_RELEASE", b"HTTP_TRACEPARENT", b"HTTP_TRACESTATE"} & bare.keys()
