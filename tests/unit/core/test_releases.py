"""Jobs waiting for their release (pure, with a fake clock)."""

from __future__ import annotations

import math

from asyncphp.core.jobs import Job
from asyncphp.core.releases import RECHECK_CAP, RECHECK_FIRST, ReleaseWait


def job(n: int, received: float = 0.0) -> Job:
    return Job(n, "jobs", b"", received)


def test_a_missing_release_is_looked_for_again_with_a_growing_delay_until_it_comes() -> None:
    wait = ReleaseWait(60.0)
    wait.add(job(1), "r3", 0.0)
    wait.add(job(2), "r3", 0.0)
    assert wait.counts() == {"r3": 2} and len(wait) == 2
    assert wait.due(0.0) == [] and wait.due(RECHECK_FIRST) == ["r3"]
    at = RECHECK_FIRST
    delays = []
    for _ in range(10):
        wait.missing("r3", at)
        nxt = wait.wake_at()
        delays.append(nxt - at)
        at = nxt
    assert delays == sorted(delays) and max(delays) == RECHECK_CAP, delays
    assert [j.id for j in wait.found("r3")] == [1, 2], "oldest first"
    assert len(wait) == 0 and wait.wake_at() == math.inf


def test_jobs_waiting_longer_than_release_wait_are_given_up_each_by_its_own_arrival() -> None:
    wait = ReleaseWait(10.0)
    wait.add(job(1, received=0.0), "r9", 0.0)
    wait.add(job(2, received=5.0), "r9", 5.0)
    assert wait.expired(9.9) == []
    assert [j.id for j in wait.expired(10.0)] == [1]
    assert wait.counts() == {"r9": 1}
    assert [j.id for j in wait.expired(15.0)] == [2]
    assert wait.counts() == {}


def test_a_drain_takes_every_waiting_job() -> None:
    wait = ReleaseWait(10.0)
    wait.add(job(1), "a", 0.0)
    wait.add(job(2), "b", 0.0)
    assert sorted(j.id for j in wait.clear()) == [1, 2] and not wait
