"""A complete FastCGI response → how the job ended (pure)."""

from __future__ import annotations

from asyncphp.core.jobs import Outcome, Result
from asyncphp.wire.fastcgi import FCGI_REQUEST_COMPLETE, Response

# PHP's warning when the body is over the pool's post_max_size ("PHP Warning:  PHP Request Startup:
# POST Content-Length of 2048 bytes exceeds the limit of 1024 bytes").
POST_TOO_LARGE = b"POST Content-Length of "
POST_TOO_LARGE_REASON = "the body is over the pool's post_max_size: PHP ran the worker with an empty $_POST"


class Refused(Exception):
    """The pool answered the request with a refusal (OVERLOADED, CANT_MPX_CONN, UNKNOWN_ROLE):
    it never ran."""


def result_of(response: Response, seconds: float) -> Result:
    """The job's result from a complete response: 2xx/3xx completed; 4xx rejected (the worker
    says the job itself is wrong: a retry cannot help); 5xx or a non-zero app status failed.

    Raises:
        Refused: the pool refused the request instead of running it.
    """
    if response.protocol_status != FCGI_REQUEST_COMPLETE:
        raise Refused(f"the pool refused it (FastCGI protocol status {response.protocol_status})")
    status = response.http_status
    if POST_TOO_LARGE in response.stderr and b" exceeds the limit of " in response.stderr:
        # PHP threw the body away and ran the worker on an empty $_POST, answering 200: the job did
        # not run as sent, and the same body would fare no better again.
        return Result(Outcome.REJECTED, POST_TOO_LARGE_REASON, status, response.stderr, seconds)
    if status >= 400:
        outcome = Outcome.REJECTED if status < 500 else Outcome.FAILED
        return Result(outcome, "the worker failed", status, response.stderr, seconds)
    if response.app_status:
        reason = f"the worker exited with status {response.app_status}"
        return Result(Outcome.FAILED, reason, status, response.stderr, seconds)
    return Result(Outcome.COMPLETED, "", status, response.stderr, seconds)
