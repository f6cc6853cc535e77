"""A complete FastCGI response → how the job ended (pure)."""

from __future__ import annotations

from asyncphp.core.jobs import Outcome, Result
from asyncphp.wire.fastcgi import FCGI_REQUEST_COMPLETE, Response

# PHP's warning when the body is over the pool's post_max_size ("PHP Warning:  PHP Request Startup:
# POST Content-Length of 2048 bytes exceeds the limit of 1024 bytes").
POST_TOO_LARGE = b"POST Content-Length of "
POST_TOO_LARGE_REASON = "the body is over the pool's post_max_size: PHP ran the worker with an empty $_POST"


# What a worker may ask of the daemon besides its status, by response headers (docs/contract.md).
# One of them decides the outcome whatever the status: the first found in this order.
DEAD_LETTER = b"asyncphp-dead-letter"  # failed for good: keep it as a dead letter now, with this reason
FAILED = b"asyncphp-failed"  # failed for good, and the worker has recorded it: acknowledge it
RETRY_IN = b"asyncphp-retry-in"  # run it again in this many seconds (a decimal), through the delayed set
NOT_RUN = b"not-run"  # after RETRY_IN's value and a ";": the worker did not run it, so no attempt was spent
RETRY_IN_MAX = 2.0**31  # seconds (68 years), as the publishers' longest delay: a release a year out is a plan
REASON_LIMIT = 500  # characters of a header's reason kept


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
    asked = _asked(response, status, seconds)
    if asked is not None:
        return asked
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


def _asked(response: Response, status: int, seconds: float) -> Result | None:
    """The result a worker asked for by header, if it asked."""
    stderr = response.stderr
    dead = response.header(DEAD_LETTER)
    if dead:
        reason = f"the worker asked for a dead letter: {_text(dead)}"
        return Result(Outcome.REJECTED, reason, status, stderr, seconds)
    failed = response.header(FAILED)
    if failed:
        reason = f"failed for good, recorded by the worker: {_text(failed)}"
        return Result(Outcome.FAILED, reason, status, stderr, seconds, recorded=True)
    again = response.header(RETRY_IN)
    if not again:
        return None
    value, _, parameter = again.partition(b";")
    uncounted = parameter.strip().lower() == NOT_RUN
    try:
        delay = float(value) if not parameter or uncounted else -1.0
    except ValueError:
        delay = -1.0
    if not 0.0 <= delay <= RETRY_IN_MAX:  # NaN too
        reason = (
            f"the worker's Asyncphp-Retry-In is not a number of seconds from 0 to {RETRY_IN_MAX:.0f}: "
            f"{_text(again)!r}"
        )
        return Result(Outcome.FAILED, reason, status, stderr, seconds)
    reason = f"the worker asked to run it again in {delay:g} s{' (it did not run it)' if uncounted else ''}"
    return Result(Outcome.DEFERRED, reason, status, stderr, seconds, again=delay, uncounted=uncounted)


def _text(value: bytes) -> str:
    return value.decode(errors="replace")[:REASON_LIMIT]
