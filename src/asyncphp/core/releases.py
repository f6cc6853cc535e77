"""Jobs waiting for their release to reach this host (pure).

With ``worker_script`` naming ``{release}``, each job runs the worker of the release that
published it. A job whose release is not (yet) here is not failed: it waits, its release looked
for again with a growing delay, up to ``release_wait``; then it is given up: a stream entry is
dead-lettered with that reason, a pub/sub message dropped with it (not kept in the spill file:
from there it would come back to wait again, round and round, for a release that never comes).

The pub/sub jobs waiting are held by this daemon alone, so they count against the queue's limits
(:meth:`ReleaseWait.held`); the stream entries waiting count against what the daemon reads
(:attr:`ReleaseWait.entries`), not the pub/sub ones, which take no read room from the streams.

Pure: the daemon looks at the filesystem and reports what it found.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from asyncphp.core.backoff import Backoff
from asyncphp.core.jobs import Job

RECHECK_FIRST = 0.1  # seconds before a missing release is looked for again, doubling
RECHECK_CAP = 5.0


@dataclass
class _Release:
    jobs: list[Job] = field(default_factory=list)  # by arrival, oldest first
    check_at: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(RECHECK_FIRST, RECHECK_CAP))


class ReleaseWait:
    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._releases: dict[str, _Release] = {}
        self._count = 0
        self.entries = 0  # stream entries among them
        self._published_bytes = 0  # the bodies of the pub/sub ones

    def __len__(self) -> int:
        return self._count

    def held(self) -> tuple[int, int]:
        """The pub/sub jobs waiting, and their bodies' bytes: the queue's limits cover them too."""
        return self._count - self.entries, self._published_bytes

    def add(self, job: Job, release: str, now: float) -> None:
        """``job``'s release was not found: it waits."""
        waiting = self._releases.get(release)
        if waiting is None:
            waiting = self._releases[release] = _Release()
            waiting.check_at = now + waiting.backoff.next()
        # By arrival: one back from the pool (its release removed meanwhile) may be older than
        # those waiting, and expiry takes from the front.
        bisect.insort_right(waiting.jobs, job, key=_arrival)
        self._counted(job, 1)

    def _counted(self, job: Job, sign: int) -> None:
        self._count += sign
        if job.published:
            self._published_bytes += sign * len(job.body)
        else:
            self.entries += sign

    def waits_for(self, release: str) -> bool:
        return release in self._releases

    def due(self, now: float) -> list[str]:
        """The releases to look for now."""
        return [name for name, r in self._releases.items() if now >= r.check_at]

    def found(self, release: str) -> list[Job]:
        """The release is here: its jobs, oldest first, to run."""
        waiting = self._releases.pop(release, None)
        for job in waiting.jobs if waiting else ():
            self._counted(job, -1)
        return waiting.jobs if waiting else []

    def missing(self, release: str, now: float) -> None:
        waiting = self._releases.get(release)
        if waiting is not None:
            waiting.check_at = now + waiting.backoff.next()

    def expired(self, now: float) -> list[Job]:
        """Jobs that waited ``release_wait`` since they arrived: given up. Costs the releases
        waited for and the jobs given up, not the jobs waiting."""
        ended: list[Job] = []
        for name in list(self._releases):
            waiting = self._releases[name]
            cut = bisect.bisect_right(waiting.jobs, now - self.wait, key=_arrival)
            if cut:
                ended += waiting.jobs[:cut]
                del waiting.jobs[:cut]
                if not waiting.jobs:
                    del self._releases[name]
        for job in ended:
            self._counted(job, -1)
        return ended

    def wake_at(self) -> float:
        wakes = [r.check_at for r in self._releases.values()]
        wakes += [job.received + self.wait for r in self._releases.values() for job in r.jobs[:1]]
        return min(wakes, default=math.inf)

    def counts(self) -> dict[str, int]:
        """Jobs waiting, per release: for STATUS= and asyncphp status."""
        return {name: len(r.jobs) for name, r in self._releases.items()}

    def clear(self) -> list[Job]:
        """Every waiting job (at the end of a drain)."""
        jobs = [job for r in self._releases.values() for job in r.jobs]
        self._releases.clear()
        self._count = self.entries = self._published_bytes = 0
        return jobs


def _arrival(job: Job) -> float:
    return job.received
