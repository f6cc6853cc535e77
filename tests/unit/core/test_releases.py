"""Jobs waiting for their release (pure, with a fake clock)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

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


def entry(n: int, received: float = 0.0) -> Job:
    return Job(n, "jobs", b"", received, origin=Ledgerish())


class Ledgerish:
    """A stream entry's origin (anything but NOWHERE): its job is not pub/sub."""

    def ended(self, job: Job, result: object) -> None:
        raise AssertionError("not called here")

    def rejected(self, message: object, reason: str) -> None:
        raise AssertionError("not called here")


def test_pub_sub_jobs_waiting_are_held_against_the_queue_and_entries_against_the_reads() -> None:
    wait = ReleaseWait(10.0)
    wait.add(Job(1, "c", b"x" * 100, 0.0), "r9", 0.0)
    wait.add(Job(2, "c", b"x" * 50, 1.0), "r8", 1.0)
    wait.add(entry(3, 2.0), "r9", 2.0)
    assert wait.held() == (2, 150) and wait.entries == 1 and len(wait) == 3
    assert [j.id for j in wait.found("r8")] == [2]
    assert wait.held() == (1, 100) and wait.entries == 1
    assert [j.id for j in wait.expired(10.0)] == [1]
    assert wait.held() == (0, 0) and wait.entries == 1
    wait.clear()
    assert wait.held() == (0, 0) and wait.entries == 0 and not wait


def test_a_job_back_from_the_pool_waits_in_its_arrival_order_and_expires_by_it() -> None:
    wait = ReleaseWait(10.0)
    wait.add(job(2, received=5.0), "r1", 5.0)
    wait.add(job(1, received=1.0), "r1", 6.0)  # its release removed after it was found: it came first
    assert wait.wake_at() == min(5.0 + RECHECK_FIRST, 11.0)
    assert [j.id for j in wait.expired(11.0)] == [1]
    assert [j.id for j in wait.found("r1")] == [2]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "found", "expired", "clear"]), st.sampled_from(["a", "b"]),
                  st.booleans(), st.integers(0, 30), st.integers(0, 40)),
        max_size=60,
    )
)  # fmt: skip
def test_every_waiting_job_leaves_once_and_the_counts_follow(
    ops: list[tuple[str, str, bool, int, int]],
) -> None:
    """Property: each job added comes out exactly once (found, expired or cleared), never before
    release_wait from its arrival by expiry, and held()/entries always count what still waits."""
    wait = ReleaseWait(10.0)
    now, n = 0.0, 0
    inside: dict[int, tuple[Job, str]] = {}
    out: list[int] = []
    for op, release, published, advance, size in ops:
        now += advance / 10
        if op == "add":
            n += 1
            new = Job(n, "c", b"x" * size, now - advance / 20) if published else entry(n, now - advance / 20)
            wait.add(new, release, now)
            inside[n] = (new, release)
        elif op == "found":
            got = wait.found(release)
            assert sorted(j.id for j in got) == sorted(i for i, (_, r) in inside.items() if r == release)
            out += [j.id for j in got]
        elif op == "expired":
            got = wait.expired(now)
            assert all(j.received + 10.0 <= now + 1e-9 for j in got)
            assert all(
                j.received + 10.0 > now - 1e-9 for j, _ in inside.values() if j.id not in {g.id for g in got}
            )
            out += [j.id for j in got]
        else:
            out += [j.id for j in wait.clear()]
        for gone in out:
            inside.pop(gone, None)
        pub = [j for j, _ in inside.values() if j.published]
        assert wait.held() == (len(pub), sum(len(j.body) for j in pub))
        assert wait.entries == len(inside) - len(pub) and len(wait) == len(inside)
    assert len(out) == len(set(out)), "none came out twice"
