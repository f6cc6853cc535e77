"""Admission decisions with a fake clock: what runs next, and what a failed request costs whom."""

from __future__ import annotations

import math

from asyncphp.core.admission import HEALTHY, READ_AHEAD_WIDTHS, Admission, End, Limits, Retry
from asyncphp.core.jobs import Failure, Job, Outcome


def job(n: int, at: float, max_attempt: int = 5, size: int = 10) -> Job:
    return Job(n, "commands", b"x" * size, at, max_attempt=max_attempt)


def started(admission: Admission, now: float) -> list[int]:
    return [j.id for j in admission.start(now)]


def test_jobs_queued_behind_a_slow_job_are_not_given_up_once_the_pool_answers() -> None:
    # Case 1: --max-in-flight 1 --retry-for 2. The pool's socket is missing for the first job,
    # then the pool starts and runs it for 5 s; three jobs queue behind it meanwhile.
    a = Admission(Limits(max_in_flight=1, retry_for=2.0))
    first = job(1, 0.0)
    a.offer(first)
    assert started(a, 0.0) == [1]
    verdict = a.failed(first, Failure.UNREACHABLE, "no socket", 0.0)
    assert isinstance(verdict, Retry) and a.unreachable_since == 0.0
    for n in (2, 3, 4):
        a.offer(job(n, 0.01 * n))
    assert started(a, 0.5) == [1]
    a.reached()  # the pool accepted the connection: the outage is over, before any answer
    assert a.unreachable_since == HEALTHY
    for now in (1.0, 2.5, 4.0, 5.4):
        assert a.expire(now) == [], "time queued behind a healthy slow job never counts"
    a.answered(0.5)
    assert started(a, 5.5) == [2]


def test_a_poison_job_ends_after_its_own_attempts_whatever_other_jobs_do() -> None:
    # Case 2: a job php-fpm kills mid-request, under a steady stream of good jobs.
    a = Admission(Limits(max_in_flight=5, retry_for=5.0))
    poison = job(1, 0.0, max_attempt=5)
    a.offer(poison)
    attempts = []
    now = 0.0
    verdict: Retry | End | None = None
    n = 2
    while verdict is None or isinstance(verdict, Retry):
        assert started(a, now) == [1]
        a.reached()
        attempts.append(poison.attempt)
        for _ in range(50):  # a second of good jobs between each of its attempts
            good = job(n, now)
            n += 1
            a.offer(good)
            assert started(a, now) == [good.id]
            a.reached()
            a.answered(0.5)
            now += 0.02
        verdict = a.failed(poison, Failure.LOST, "reset before any answer", now)
    assert attempts == [1, 2, 3, 4, 5]
    assert isinstance(verdict, End) and verdict.result.outcome is Outcome.FAILED
    assert "attempt 5 of 5" in verdict.result.reason


def test_given_up_only_after_retry_for_of_unbroken_outage_since_it_arrived() -> None:
    a = Admission(Limits(max_in_flight=1, retry_for=2.0))
    probe = job(1, 0.0)
    a.offer(probe)
    assert started(a, 0.0) == [1]
    a.failed(probe, Failure.UNREACHABLE, "refused", 0.0)  # the outage starts at 0
    late = job(2, 1.0)  # arrives during the outage: its own 2 s start at 1
    a.offer(late)
    assert [e.job.id for e in a.expire(1.99)] == []
    assert [e.job.id for e in a.expire(2.0)] == [1]
    assert a.expire(2.99) == []
    (end,) = a.expire(3.0)
    assert end.job is late and end.result.outcome is Outcome.UNDELIVERED and end.result.reason == "refused"


def test_a_long_outage_does_not_hand_each_queued_job_a_fresh_retry_for() -> None:
    a = Admission(Limits(max_in_flight=1, retry_for=60.0))
    for n in range(1, 101):
        a.offer(job(n, 0.0))
    head = next(a.start(0.0))
    a.failed(head, Failure.UNREACHABLE, "refused", 10.0)
    # Every job was there when the outage began: all share its deadline, 70 s.
    assert a.expire(69.9) == []
    assert len(a.expire(70.0, limit=1000)) == 100


def test_a_break_in_the_outage_restarts_every_clock() -> None:
    a = Admission(Limits(max_in_flight=1, retry_for=2.0))
    j = job(1, 0.0)
    a.offer(j)
    assert started(a, 0.0) == [1]
    a.failed(j, Failure.UNREACHABLE, "refused", 0.0)
    assert started(a, 1.9) == [1]
    a.reached()
    a.failed(j, Failure.LOST, "reset before any answer", 1.9)  # reached it: its own attempt
    assert started(a, 1.9) == [1]
    a.failed(j, Failure.UNREACHABLE, "refused", 1.95)  # a new outage from 1.95
    assert a.expire(3.9) == []
    assert [e.job.id for e in a.expire(3.95)] == [1]


def test_unreachable_pauses_dispatching_with_growing_backoff_and_reaching_resets_it() -> None:
    a = Admission(Limits(max_in_flight=1, retry_for=60.0))
    j = job(1, 0.0)
    a.offer(j)
    delays = []
    now = 0.0
    for _ in range(7):
        assert started(a, now) == [1]
        verdict = a.failed(j, Failure.UNREACHABLE, "refused", now)
        assert isinstance(verdict, Retry)
        delays.append(verdict.delay)
        assert started(a, now + verdict.delay - 0.001) == [], "paused until the backoff ends"
        assert a.wake_at(now) == now + verdict.delay
        now += verdict.delay
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert j.attempt == 1, "a request that never reached the pool is not an attempt"
    assert started(a, now) == [1]
    a.reached()
    a.failed(j, Failure.UNREACHABLE, "refused", now)
    assert a.wake_at(now) == now + 0.05


def test_a_request_that_may_have_run_is_never_retried() -> None:
    a = Admission(Limits())
    j = job(1, 0.0)
    a.offer(j)
    assert started(a, 0.0) == [1]
    verdict = a.failed(j, Failure.BROKEN, "reset after the worker began to answer", 0.0)
    assert isinstance(verdict, End) and verdict.result.outcome is Outcome.FAILED
    assert a.idle


def test_a_stream_job_lost_before_any_answer_goes_back_to_its_ledger() -> None:
    # A stream entry's job may not be retried by the dispatcher: its ledger retries it later,
    # counted by Redis (max_attempt is the delivery).
    a = Admission(Limits())
    j = Job(1, "jobs", b"x", 0.0, attempt=3, max_attempt=0)
    a.offer(j)
    assert started(a, 0.0) == [1]
    verdict = a.failed(j, Failure.LOST, "reset", 0.0)
    assert isinstance(verdict, End) and verdict.result.outcome is Outcome.FAILED and j.attempt == 3
    assert verdict.result.reason == "reset", "no attempt count of its own: the ledger says it"


def test_room_counts_jobs_and_bytes_and_a_free_slot_takes_a_job_even_with_no_queue() -> None:
    a = Admission(Limits(max_in_flight=1, max_queued=2, max_queued_bytes=25))
    assert a.has_room(1000, 0.0), "a free slot takes it at once"
    a.offer(job(1, 0.0, size=1000))
    assert started(a, 0.0) == [1]
    assert a.has_room(10, 0.0)
    a.offer(job(2, 0.0))
    assert not a.has_room(16, 0.0), "bytes"
    a.offer(job(3, 0.0))
    assert not a.has_room(1, 0.0), "count"
    assert a.queued == 2 and a.queued_bytes == 20 and a.free == -2
    zero = Admission(Limits(max_in_flight=1, max_queued=0))
    assert zero.has_room(10, 0.0)
    zero.offer(job(1, 0.0))
    assert not zero.has_room(10, 0.0)


def test_jobs_that_failed_together_keep_their_order() -> None:
    a = Admission(Limits(max_in_flight=3))
    jobs = [job(n, 0.0) for n in (1, 2, 3, 4)]
    for j in jobs:
        a.offer(j)
    running = list(a.start(0.0))
    assert [j.id for j in running] == [1, 2, 3]
    a.reached()
    for j in reversed(running):
        a.failed(j, Failure.LOST, "reset", 0.0)
    assert started(a, 0.0) == [1, 2, 3]


def test_expire_is_bounded_per_call_and_wake_at_says_when() -> None:
    a = Admission(Limits(max_in_flight=1, retry_for=1.0))
    for n in range(1, 2502):
        a.offer(job(n, 0.0))
    head = next(a.start(0.0))
    a.failed(head, Failure.UNREACHABLE, "refused", 0.0)
    assert a.wake_at(0.0) == 0.05
    assert len(a.expire(5.0)) == 1000
    assert a.wake_at(5.0) <= 5.0, "more to give up: wake at once"
    assert len(a.expire(5.0)) == 1000 and len(a.expire(5.0)) == 501
    assert a.wake_at(5.0) == math.inf and a.idle


def test_a_probe_alone_sees_the_end_of_an_outage_that_no_job_is_left_to_try() -> None:
    # Everything queued was given up (and kept elsewhere): only a probe can see the pool come back.
    a = Admission(Limits(max_in_flight=1, retry_for=1.0))
    assert not a.probe(0.0), "no outage: nothing to probe"
    j = job(1, 0.0)
    a.offer(j)
    assert started(a, 0.0) == [1]
    a.failed(j, Failure.UNREACHABLE, "refused", 0.0)
    assert not a.probe(0.0), "a job is still queued: it will try"
    assert [e.job.id for e in a.expire(1.0)] == [1]
    assert a.probe(1.0) and not a.probe(1.0), "one at a time"
    a.probe_failed("refused again", 1.0)
    assert not a.probe(1.05) and a.probe(1.1), "after the backoff"
    a.reached()
    assert a.unreachable_since == HEALTHY and not a.probe(5.0)


def test_a_pool_that_accepts_connections_but_refuses_requests_is_out_until_it_answers() -> None:
    # Found in review: each accepted connection ended the outage, so a pool answering OVERLOADED
    # to every request had its jobs retried every 50 ms forever, never given up.
    a = Admission(Limits(max_in_flight=1, retry_for=2.0))
    j = job(1, 0.0)
    a.offer(j)
    now, delays = 0.0, []
    verdict: Retry | End | None = None
    while not isinstance(verdict, End):
        assert started(a, now) == [1]
        a.reached()  # the connection is accepted…
        verdict = a.failed(j, Failure.REFUSED, "the pool refused it", now)  # …the request is not
        if isinstance(verdict, Retry):
            delays.append(verdict.delay)
            now += verdict.delay
    assert verdict.result.outcome is Outcome.UNDELIVERED and now >= 2.0
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4], "the backoff grows"
    assert j.attempt == 1, "a refused request never ran"
    b = Admission(Limits(max_in_flight=1, retry_for=2.0))
    k = job(2, 0.0)
    b.offer(k)
    assert started(b, 0.0) == [2]
    b.reached()
    b.failed(k, Failure.REFUSED, "refused", 0.0)
    assert started(b, 0.05) == [2]
    b.reached()
    b.answered(0.5)  # one request answered: the outage is over
    assert b.out_since == math.inf


def test_no_wake_up_for_a_backoff_whose_end_no_free_slot_can_use() -> None:
    # Found in review: after SIGHUP lowered max_in_flight during a pause, wake_at() kept giving
    # a time in the past while no slot was free, and the loop spun.
    a = Admission(Limits(max_in_flight=2, retry_for=60.0))
    for n in (1, 2, 3):
        a.offer(job(n, 0.0))
    first, _ = list(a.start(0.0))
    a.failed(first, Failure.UNREACHABLE, "refused", 0.0)
    a.limits = Limits(max_in_flight=1, retry_for=60.0)  # SIGHUP
    assert a.wake_at(100.0) == 60.0, "the next give-up, not the past end of the backoff"


def test_a_durable_source_reads_ahead_in_batches_for_quick_jobs_only() -> None:
    a = Admission(Limits(max_in_flight=4))
    assert a.readable == 4, "how long jobs take is unknown yet: the free slots only"
    for n in range(4):
        a.offer(job(n, 0.0))
    assert started(a, 0.0) == [0, 1, 2, 3]
    a.answered(0.001)  # a quick job: the pool runs 40 of them in READ_AHEAD_SECONDS
    assert a.readable == 4 + READ_AHEAD_WIDTHS * 4 - 3, "the free slot, and up to three widths queued"
    for n in range(4, 17):
        a.offer(job(n, 0.0))
    assert started(a, 0.0) == [4]
    assert a.readable == 0, "twelve queued: not worth a read yet"
    for n in range(6):
        a.answered(0.001)
        assert started(a, 0.0) == [5 + n]
    assert a.readable == 6, "down to half of what may be queued: read what fills it again"

    slow = Admission(Limits(max_in_flight=4))
    slow.offer(job(1, 0.0))
    started(slow, 0.0)
    slow.answered(2.0)  # a two-second job: reading ahead would only keep jobs from other consumers
    assert slow.readable == 4
    # Read ahead no more than half the queue's room, in count and in bytes (by the bodies seen):
    # what the queue could not take would only wait, pending, for claim_idle.
    for limits, expected in (
        (Limits(max_in_flight=4, max_queued=2), 4 + 1),
        (Limits(max_in_flight=4, max_queued_bytes=40), 4 + 2),  # bodies of 10 bytes
        (Limits(max_in_flight=4, max_queued_bytes=0), 4),
    ):
        small = Admission(limits)
        small.offer(job(1, 0.0))
        started(small, 0.0)
        small.answered(0.001)
        assert small.readable == expected, limits


def test_one_slow_job_stops_the_read_ahead_at_once_and_quick_ones_bring_it_back_gradually() -> None:
    a = Admission(Limits(max_in_flight=4))
    for n in range(4):
        a.offer(job(n, 0.0))
    started(a, 0.0)
    for _ in range(3):
        a.answered(0.001)
    assert a.readable > 4
    a.took(0.5)  # a request that ran half a second (answered or not)
    assert a.readable == 4 - a.in_flight, "only the free slots: slow jobs are shared with other consumers"
    for _ in range(100):
        a.took(0.001)
    assert a.readable > 4 - a.in_flight, "quick again: the read-ahead comes back"
