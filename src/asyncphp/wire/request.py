"""A job's form body → the FastCGI request a PHP worker expects.

The CGI set mirrors what the original daemon's client (hollodotme/fast-cgi-client) sent, so a
worker written for the original sees the same ``$_SERVER``; SCRIPT_NAME, REQUEST_URI and friends
are added so that frameworks which route on them work too.
"""

from __future__ import annotations

import posixpath

from asyncphp.version import __version__
from asyncphp.wire.fastcgi import encode_params, encode_request
from asyncphp.wire.meta import NONE, Meta


class RequestBuilder:
    """Builds requests for one worker script; everything constant is encoded once."""

    def __init__(self, worker_script: str) -> None:
        name = "/" + posixpath.basename(worker_script)
        constant = {
            "GATEWAY_INTERFACE": "FastCGI/1.0",
            "SERVER_SOFTWARE": f"asyncphp/{__version__}",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "localhost",
            "SERVER_ADDR": "127.0.0.1",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "9985",
            "REQUEST_METHOD": "POST",
            "SCRIPT_FILENAME": worker_script,
            "SCRIPT_NAME": name,
            "DOCUMENT_ROOT": posixpath.dirname(worker_script),
            "DOCUMENT_URI": name,
            "REQUEST_URI": name,
            "QUERY_STRING": "",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
        }
        self._constant = encode_params((k.encode(), v.encode()) for k, v in constant.items())

    def build(
        self,
        request_id: int,
        channel: str,
        body: bytes,
        attempt: int = 1,
        message_id: str = "",
        due_at: str = "",
        meta: Meta = NONE,
        first_id: str = "",
    ) -> bytes:
        """The whole request for one job; ``request_id``, ``channel`` and ``attempt`` reach the
        worker as ``$_SERVER['ASYNCPHP_REQUEST_ID']``, ``['ASYNCPHP_CHANNEL']`` and
        ``['ASYNCPHP_ATTEMPT']`` (above 1 when the pool dropped an earlier attempt, or a stream entry is
        delivered again), a stream entry's id as ``['ASYNCPHP_MESSAGE_ID']``, and a delayed job's
        due time (seconds since the epoch, to the ms) as ``['ASYNCPHP_DUE_AT']``; for a job run again
        at its worker's ask, the entry its lineage began with as ``['ASYNCPHP_FIRST_ID']``; and what
        the publisher said besides the payload (:meth:`Meta.params`)."""
        varying = encode_params(
            (
                (b"CONTENT_LENGTH", b"%d" % len(body)),
                (b"ASYNCPHP_CHANNEL", channel.encode()),
                (b"ASYNCPHP_REQUEST_ID", b"%d" % request_id),
                (b"ASYNCPHP_ATTEMPT", b"%d" % attempt),
                *([(b"ASYNCPHP_MESSAGE_ID", message_id.encode())] if message_id else []),
                *([(b"ASYNCPHP_DUE_AT", due_at.encode())] if due_at else []),
                *([(b"ASYNCPHP_FIRST_ID", first_id.encode())] if first_id else []),
                *meta.params(),
            )
        )
        return encode_request(self._constant + varying, body)
