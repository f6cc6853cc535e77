"""A complete FastCGI response → how the job ended (pure)."""

from __future__ import annotations

from asyncphp.core.jobs import Outcome, Result
from asyncphp.wire.fastcgi import FCGI_REQUEST_COMPLETE, Response


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
    if status >= 400:
        outcome = Outcome.REJECTED if status < 500 else Outcome.FAILED
        return Result(outcome, "the worker failed", status, response.stderr, seconds)
    if response.app_status:
        reason = f"the worker exited with status {response.app_status}"
        return Result(Outcome.FAILED, reason, status, response.stderr, seconds)
    return Result(Outcome.COMPLETED, "", status, response.stderr, seconds)
