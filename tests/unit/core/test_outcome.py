"""A complete FastCGI response → how the job ended."""

from __future__ import annotations

import pytest

from asyncphp.core.jobs import Outcome
from asyncphp.core.outcome import Refused, result_of
from asyncphp.wire.fastcgi import FCGI_OVERLOADED, FCGI_REQUEST_COMPLETE, Response


def response(status: int = 200, app_status: int = 0, protocol: int = FCGI_REQUEST_COMPLETE) -> Response:
    head = b"Content-type: text/html\r\n\r\n" if status == 200 else b"Status: %d Oops\r\n\r\n" % status
    return Response(head=head, stderr=b"PHP Fatal error" if status >= 500 else b"", app_status=app_status,
                    protocol_status=protocol)  # fmt: skip


@pytest.mark.parametrize(
    ("status", "app_status", "outcome", "reason"),
    [
        (200, 0, Outcome.COMPLETED, ""),
        (302, 0, Outcome.COMPLETED, ""),
        (404, 0, Outcome.REJECTED, "the worker failed"),
        (422, 0, Outcome.REJECTED, "the worker failed"),
        (500, 0, Outcome.FAILED, "the worker failed"),
        (503, 0, Outcome.FAILED, "the worker failed"),
        (200, 255, Outcome.FAILED, "the worker exited with status 255"),
    ],
)
def test_status_and_app_status_decide_the_outcome(
    status: int, app_status: int, outcome: Outcome, reason: str
) -> None:
    result = result_of(response(status, app_status), 0.25)
    assert (result.outcome, result.reason, result.status, result.seconds) == (outcome, reason, status, 0.25)


def test_a_refusal_by_the_pool_is_not_an_outcome() -> None:
    with pytest.raises(Refused, match="FastCGI protocol status 2"):
        result_of(response(protocol=FCGI_OVERLOADED), 0.0)


def test_a_body_over_post_max_size_is_rejected_though_the_worker_answered_200() -> None:
    # Old behaviour (issue 23, item 15): logged as a success, the job having run on an empty $_POST.
    warning = b"PHP Warning:  PHP Request Startup: POST Content-Length of 2048 bytes exceeds the limit of 1"
    answered = Response(head=b"Content-type: text/html\r\n\r\n", stderr=warning, app_status=0,
                        protocol_status=FCGI_REQUEST_COMPLETE)  # fmt: skip
    result = result_of(answered, 0.01)
    assert result.outcome is Outcome.REJECTED and result.status == 200
    assert "post_max_size" in result.reason


def asking(*headers: bytes, status: int = 200) -> Response:
    head = (b"Status: %d Oops\r\n" % status if status != 200 else b"") + b"".join(
        h + b"\r\n" for h in headers
    )
    return Response(head=head + b"Content-type: text/html\r\n\r\nAsyncphp-Retry-In: 9", app_status=0,
                    protocol_status=FCGI_REQUEST_COMPLETE)  # fmt: skip


@pytest.mark.parametrize("status", [200, 500])
def test_a_worker_asks_to_be_run_again_in_n_seconds_whatever_its_status(status: int) -> None:
    result = result_of(asking(b"Asyncphp-Retry-In: 2.5", status=status), 0.1)
    assert (result.outcome, result.again, result.status) == (Outcome.DEFERRED, 2.5, status)
    assert result.reason == "the worker asked to run it again in 2.5 s"


@pytest.mark.parametrize("value", [b"soon", b"-1", b"nan", b"inf", b"9999999999"])
def test_a_retry_in_that_is_no_number_of_seconds_fails_the_attempt_with_a_reason(value: bytes) -> None:
    result = result_of(asking(b"asyncphp-retry-in: " + value), 0.1)
    assert result.outcome is Outcome.FAILED and not result.recorded
    assert (
        "Asyncphp-Retry-In is not a number of seconds" in result.reason
        and repr(value.decode()) in result.reason
    )


def test_a_retry_in_marked_not_run_spends_no_attempt() -> None:
    result = result_of(asking(b"Asyncphp-Retry-In: 10; not-run"), 0.1)
    assert (result.outcome, result.again, result.uncounted) == (Outcome.DEFERRED, 10.0, True)
    assert result_of(asking(b"Asyncphp-Retry-In: 10; later"), 0.1).outcome is Outcome.FAILED


def test_a_worker_asks_for_a_dead_letter_now_with_its_reason_over_any_other_ask() -> None:
    result = result_of(asking(b"Asyncphp-Retry-In: 1", b"Asyncphp-Dead-Letter: no such user 42"), 0.1)
    assert (result.outcome, result.reason) == (
        Outcome.REJECTED,
        "the worker asked for a dead letter: no such user 42",
    )


def test_a_failure_the_worker_recorded_is_final_and_marked_recorded() -> None:
    result = result_of(
        asking(b"Asyncphp-Failed: RuntimeException: boom", b"Asyncphp-Retry-In: 1", status=500), 0.1
    )
    assert (result.outcome, result.recorded) == (Outcome.FAILED, True)
    assert result.reason == "failed for good, recorded by the worker: RuntimeException: boom"


def test_a_header_in_the_body_is_no_ask() -> None:
    assert result_of(asking(), 0.1).outcome is Outcome.COMPLETED


def test_a_retry_in_a_year_out_is_a_plan_not_a_bug() -> None:
    # Laravel's release(now()->addYear()): as far as a publisher may delay a job (2**31 s).
    result = result_of(asking(b"Asyncphp-Retry-In: 31536000"), 0.1)
    assert result.outcome is Outcome.DEFERRED and result.again == 31_536_000
