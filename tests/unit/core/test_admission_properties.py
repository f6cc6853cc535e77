"""Admission's invariants over generated histories (hypothesis): every accepted job ends exactly
once; no job is given up unless the pool was out (unreachable, or refusing requests), without a
break, for retry_for since the job arrived; a job's own attempts never exceed its budget and its
attempt number never goes backwards."""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from asyncphp.core.admission import Admission, End, Limits, Retry
from asyncphp.core.jobs import Failure, Job, Outcome

RETRY_FOR = 2.0
MAX_ATTEMPT = 3


class AdmissionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.admission = Admission(
            Limits(max_in_flight=3, max_queued=6, max_queued_bytes=60, retry_for=RETRY_FOR)
        )
        self.now = 0.0
        self.next_id = 1
        self.accepted: dict[int, Job] = {}
        self.arrived: dict[int, float] = {}
        self.ended: dict[int, Outcome] = {}
        self.running: dict[int, bool] = {}  # job id → connected
        self.attempts: dict[int, list[int]] = {}  # the attempt number of each request sent
        self.reached_at = -math.inf  # the last time the pool accepted a connection
        self.unreachable_at: list[float] = []  # every time it could not be reached
        self.answered_at = -math.inf  # the last time it answered a request
        self.refused_at: list[float] = []  # every time it refused one

    # The world.

    @rule(size=st.integers(1, 25))
    def arrive(self, size: int) -> None:
        if not self.admission.has_room(size, self.now):
            return  # the caller keeps or drops it: not admitted
        job = Job(self.next_id, "c", b"x" * size, self.now, max_attempt=MAX_ATTEMPT)
        self.next_id += 1
        self.accepted[job.id], self.arrived[job.id] = job, self.now
        self.admission.offer(job)

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.05, 0.3, 1.0, 2.5]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def pump(self) -> None:
        for end in self.admission.expire(self.now):
            self._end(end)
        for job in self.admission.start(self.now):
            assert job.id not in self.running and job.id not in self.ended
            self.running[job.id] = False
            self.attempts.setdefault(job.id, []).append(job.attempt)

    @precondition(lambda self: any(not connected for connected in self.running.values()))
    @rule(data=st.data())
    def cannot_connect(self, data: st.DataObject) -> None:
        job = self._pick(data, connected=False)
        self.unreachable_at.append(self.now)
        self._verdict(self.admission.failed(job, Failure.UNREACHABLE, "refused", self.now))

    @precondition(lambda self: any(not connected for connected in self.running.values()))
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        job = self._pick(data, connected=False)
        self.running[job.id] = True
        self.reached_at = self.now
        self.admission.reached()

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data(), how=st.sampled_from(["answered", "lost", "broken", "refused"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        job = self._pick(data, connected=True)
        if how == "answered":
            del self.running[job.id]
            self.answered_at = self.now
            self.admission.answered(0.5)
            self._record(job, Outcome.COMPLETED)
            return
        if how == "refused":
            self.refused_at.append(self.now)
        failure = {"lost": Failure.LOST, "broken": Failure.BROKEN, "refused": Failure.REFUSED}[how]
        self._verdict(self.admission.failed(job, failure, how, self.now))

    # Checks.

    def _pick(self, data: st.DataObject, connected: bool) -> Job:
        ids = sorted(i for i, c in self.running.items() if c is connected)
        return self.accepted[data.draw(st.sampled_from(ids))]

    def _verdict(self, verdict: Retry | End) -> None:
        del self.running[verdict.job.id]
        if isinstance(verdict, End):
            self._end(verdict)

    def _end(self, end: End) -> None:
        job = end.job
        if end.result.outcome is Outcome.UNDELIVERED:
            # Out without a break: unreachable since the first failure to reach it after it was
            # last reached, or refusing since the first refusal after its last answer.
            starts = [t for t in self.unreachable_at if t >= self.reached_at][:1]
            starts += [t for t in self.refused_at if t >= self.answered_at][:1]
            assert starts, "given up while the pool was taking jobs"
            assert self.now >= max(self.arrived[job.id], min(starts)) + RETRY_FOR, "given up early"
        self._record(job, end.result.outcome)

    def _record(self, job: Job, outcome: Outcome) -> None:
        assert job.id not in self.ended, f"job {job.id} ended twice"
        self.ended[job.id] = outcome

    @invariant()
    def slots_and_queue_add_up(self) -> None:
        a = self.admission
        assert a.in_flight == len(self.running) <= a.limits.max_in_flight
        waiting = set(self.accepted) - set(self.ended) - set(self.running)
        assert a.queued == len(waiting)

    @invariant()
    def attempts_stay_within_budget_and_never_go_back(self) -> None:
        for numbers in self.attempts.values():
            assert numbers == sorted(numbers) and numbers[-1] <= MAX_ATTEMPT

    def teardown(self) -> None:
        # The pool comes back and answers everything: every accepted job then ends exactly once.
        for _ in range(1000):
            if self.admission.idle:
                break
            self.now += 2.5
            self.pump()
            for job_id in list(self.running):
                self.running[job_id] = True
                self.reached_at = self.now
                self.admission.reached()
                del self.running[job_id]
                self.admission.answered(0.5)
                self._record(self.accepted[job_id], Outcome.COMPLETED)
        assert set(self.ended) == set(self.accepted)


AdmissionMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_admission_invariants = AdmissionMachine.TestCase
