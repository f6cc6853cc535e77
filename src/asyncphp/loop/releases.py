"""Release-aware routing: which worker script each job runs, and where a release's script is on this host.

``worker_script`` names ``{release}``; a job's release fills it in. The path must resolve
(symlinks followed, as php-fpm will) to a file inside ``releases_root``: a release id cannot
reach anything else, whatever links a deploy leaves behind. What was found is kept for a second,
so that a burst of jobs costs one look, not one per job; the resolved path is what the pool is
given, so that what was checked is what runs (a release named by a link, such as ``current``,
runs what the link named when it was looked at).
"""

from __future__ import annotations

import math
import os
from enum import Enum
from logging import Logger

from asyncphp.core.jobs import Job, Result
from asyncphp.core.releases import ReleaseWait
from asyncphp.loop.story import Story
from asyncphp.wire.meta import Meta
from asyncphp.wire.request import RequestBuilder

PLACEHOLDER = "{release}"
FOUND_FOR = 1.0  # seconds a release found is trusted before it is looked at again
MAX_BUILDERS = 64  # requests' constant parts kept per release script
# What php-fpm says on stderr, with its 404, for a SCRIPT_FILENAME it cannot open (PHP 8.2; before).
SCRIPT_MISSING = (b"Unable to open primary script", b"Primary script unknown")


class OutsideRoot(ValueError):
    """The release's script resolves outside releases_root."""


class ReleaseFinder:
    def __init__(self, template: str, root: str) -> None:
        self.template = template
        self.templated = PLACEHOLDER in template
        self._root = os.path.realpath(root) if root else ""
        self._found: dict[str, tuple[str, float]] = {}  # release → (script, until)
        self.seen: set[str] = set()  # releases found here at some point: one gone since was removed

    def locate(self, release: str, now: float) -> str | None:
        """The script of ``release``, resolved; None while it is not on this host.

        Raises:
            OutsideRoot: it resolves outside releases_root (a link out of it).
        """
        cached = self._found.get(release)
        if cached is not None and now < cached[1]:
            return cached[0]
        path = self.template.replace(PLACEHOLDER, release)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._root]) != self._root or real == self._root:
            raise OutsideRoot(f"release {release}: {path} is {real}, outside releases_root ({self._root})")
        if not os.path.isfile(real):
            self._found.pop(release, None)
            return None
        # The resolved path, not the link: what was checked is what runs.
        self._found[release] = (real, now + FOUND_FOR)
        self.seen.add(release)
        return real

    def forget(self, release: str) -> None:
        """What was found for ``release`` is stale (the pool did not find its script): look again."""
        self._found.pop(release, None)


# Routing: which worker script each job runs. The engine asks, and carries out what it is told.


class Placed(Enum):
    RUN = "run"  # the job has its script: queue it
    MISSING = "missing"  # its release is not here yet: it may wait for it (:meth:`Routes.wait`)
    REFUSED = "refused"  # it cannot run on this host (the reason says why)


class Routes:
    """Every job runs ``worker_script``: release-aware routing is off, and costs one call a job."""

    def __init__(self, worker_script: str) -> None:
        self._requests = RequestBuilder(worker_script)

    @property
    def waiting(self) -> int:
        """Jobs waiting here for their release."""
        return 0

    @property
    def entries(self) -> int:
        """Stream entries among them."""
        return 0

    def held(self) -> tuple[int, int]:
        """The pub/sub jobs waiting, and their bodies' bytes."""
        return 0, 0

    def configure(self, wait: float) -> None:
        pass

    def place(self, job: Job, now: float) -> tuple[Placed, str]:
        """Give ``job`` its script, or say why not."""
        return Placed.RUN, ""

    def wait_for(self, job: Job, now: float) -> None:
        """``job``'s release is missing (:meth:`place`), and the queue's limits can hold it: it waits."""
        raise AssertionError("without release routing no release is missing")

    def request(self, job: Job, meta: Meta) -> bytes:
        """The job's request, with ``meta`` (the job's, its trace context the daemon's own)."""
        return self._builder_of(job).build(
            job.id, job.channel, job.body, job.attempt, job.message_id, job.due_at, meta, job.first_id
        )

    def _builder_of(self, job: Job) -> RequestBuilder:
        return self._requests

    def turn(self, now: float) -> list[tuple[Job, str]]:
        """The jobs due an answer, in order: "" to queue one (its release came), else why it is
        given up."""
        return []

    def taken_back(self, job: Job, result: Result, now: float) -> str:
        """Why ``job``, which ended with ``result``, waits again instead of ending ("": it ends)."""
        return ""

    def wake_at(self) -> float:
        return math.inf

    def clear(self) -> list[Job]:
        """Every waiting job (at the end of a drain)."""
        return []

    def status(self) -> list[str]:
        """Parts of the STATUS= line."""
        return []

    def snapshot(self) -> dict[str, str]:
        """What the heartbeat tells ``asyncphp status``."""
        return {"releases_waiting": "", "releases_removed": ""}


class ReleaseRoutes(Routes):
    """Each job runs its release's worker script (``worker_script`` names ``{release}``); a job whose
    release is not on this host waits for it, up to ``release_wait`` (``asyncphp.core.releases``)."""

    def __init__(
        self, worker_script: str, root: str, default_release: str, wait: float, log: Logger, story: Story
    ) -> None:
        super().__init__(worker_script)
        self.finder = ReleaseFinder(worker_script, root)
        self.wait = ReleaseWait(wait)
        self._default = default_release
        self._log = log
        self._story = story
        self._builders: dict[str, RequestBuilder] = {}  # per release's script

    @property
    def waiting(self) -> int:
        return len(self.wait)

    @property
    def entries(self) -> int:
        return self.wait.entries

    def held(self) -> tuple[int, int]:
        return self.wait.held()

    def configure(self, wait: float) -> None:
        self.wait.wait = wait

    def place(self, job: Job, now: float) -> tuple[Placed, str]:
        release = job.release or self._default
        if release != job.release:
            job.meta = job.meta.released(release)
        if not release:
            return Placed.REFUSED, "it names no release, and default_release is not set"
        try:
            script = self.finder.locate(release, now)
        except OutsideRoot as exc:
            return Placed.REFUSED, str(exc)
        if script is not None:
            job.script = script
            return Placed.RUN, ""
        return Placed.MISSING, ""

    def wait_for(self, job: Job, now: float) -> None:
        release = job.release
        if not self.wait.waits_for(release):
            self._log.warning(
                "release %s is not on this host (%s): its jobs wait for it, up to release_wait (%g s)",
                release, self.finder.template.replace(PLACEHOLDER, release), self.wait.wait,
            )  # fmt: skip
        self.wait.add(job, release, now)

    def _builder_of(self, job: Job) -> RequestBuilder:
        if not job.script:
            return self._requests
        script = job.script
        builder = self._builders.get(script)
        if builder is None:
            if len(self._builders) >= MAX_BUILDERS:
                self._builders.clear()  # releases come and go: keep the recent ones
            builder = self._builders[script] = RequestBuilder(script)
        return builder

    def turn(self, now: float) -> list[tuple[Job, str]]:
        """Look again for the releases jobs wait for, in turn: those found run; then those that
        waited release_wait are given up."""
        due: list[tuple[Job, str]] = []
        if not self.wait:
            return due
        for release in self.wait.due(now):
            try:
                script = self.finder.locate(release, now)
            except OutsideRoot as exc:
                due += [(job, str(exc)) for job in self.wait.found(release)]
                continue
            if script is None:
                self.wait.missing(release, now)
                continue
            jobs = self.wait.found(release)
            self._log.warning("release %s is here: its %d waiting job(s) run", release, len(jobs))
            for job in jobs:
                job.script = script
                due.append((job, ""))
        wait = self.wait.wait
        due += [
            (job, f"release {job.release} did not reach this host within release_wait ({wait:g} s)")
            for job in self.wait.expired(now)
        ]
        return due

    def taken_back(self, job: Job, result: Result, now: float) -> str:
        """A job whose release's script the pool did not find (removed since it was looked for)
        waits for it again, while its release_wait lasts."""
        if (
            not job.script
            or result.status != 404
            or not any(said in result.stderr for said in SCRIPT_MISSING)
        ):
            return ""
        self.finder.forget(job.release)
        if job.received + self.wait.wait <= now:
            return ""
        self._story.release_gone(job)
        job.script = ""
        self.wait.add(job, job.release, now)
        return f"release {job.release} gone: waiting for it"

    def wake_at(self) -> float:
        return self.wait.wake_at()

    def clear(self) -> list[Job]:
        return self.wait.clear()

    def status(self) -> list[str]:
        return [
            f"{count} waiting for release {release}{' (removed)' if release in self.finder.seen else ''}"
            for release, count in self.wait.counts().items()
        ]

    def snapshot(self) -> dict[str, str]:
        counts = self.wait.counts()
        return {
            "releases_waiting": ",".join(f"{r}={n}" for r, n in counts.items()),
            "releases_removed": ",".join(r for r in counts if r in self.finder.seen),
        }
