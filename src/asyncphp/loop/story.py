"""Every line the log says about a job, from its dispatch to its end, in one place.

A job's story is told by whichever part saw it happen (the dispatcher: answered, retried, failed,
given up; the loop: refused, left pending, running on or undone at a drain; the release routes:
its release gone), but in these words, with the same journal fields, and one line where it ends.
What a stream entry becomes afterwards (acknowledged, dead-lettered) is the stream source's.
"""

from __future__ import annotations

import logging

from asyncphp.core.jobs import Job, Outcome, Result
from asyncphp.logfmt import preview
from asyncphp.loop.logsink import Sink, job_fields

STDERR_PREVIEW = 600  # characters: enough for a PHP fatal error with its file and line


class Story:
    def __init__(self, log: logging.Logger, sink: Sink) -> None:
        self._log = log
        self._sink = sink

    def _say(
        self, level: int, job: Job, msg: str, *args: object, status: int = 0, elapsed_ms: float = -1.0
    ) -> None:
        # Checked first: the journal fields are work that a suppressed line (INFO under
        # log_level = WARNING, on the hot path) should not cost.
        if self._log.isEnabledFor(level):
            self._log.log(level, msg, *args, extra=job_fields(job, status, elapsed_ms))

    def dispatched(self, job: Job) -> None:
        # DEBUG: at INFO a job gets one line, when it ends (see answered).
        if job.attempt == 1:
            self._say(logging.DEBUG, job, "Spawned process with ID: %d", job.id)
        else:
            self._say(logging.DEBUG, job, "Spawned process with ID: %d (attempt %d)", job.id, job.attempt)

    def answered(self, job: Job, result: Result) -> None:
        elapsed_ms = result.seconds * 1000
        stderr = f"; stderr {preview(result.stderr, STDERR_PREVIEW)}" if result.stderr else ""
        if result.outcome is Outcome.DEFERRED and job.published:
            self._say(
                logging.ERROR, job, "job %d on %s: status %d in %.1f ms, %s, but a pub/sub message has "
                "nowhere to wait (a stream entry has): not run again; message %s%s",
                job.id, job.channel, result.status, elapsed_ms, result.reason,
                preview(job.payload or job.body), stderr, status=result.status, elapsed_ms=elapsed_ms,
            )  # fmt: skip
        elif result.outcome is Outcome.DEFERRED:
            self._say(
                logging.INFO, job, "job %d on %s: status %d in %.1f ms, %s (attempt %d)%s",
                job.id, job.channel, result.status, elapsed_ms, result.reason, job.attempt, stderr,
                status=result.status, elapsed_ms=elapsed_ms,
            )  # fmt: skip
        elif result.reason:
            self._say(
                logging.ERROR, job, "job %d on %s: status %d in %.1f ms, %s%s",
                job.id, job.channel, result.status, elapsed_ms, result.reason, stderr,
                status=result.status, elapsed_ms=elapsed_ms,
            )  # fmt: skip
        elif self._log.isEnabledFor(logging.INFO):
            # The line nearly every job gets: past the logging machinery (see logsink).
            self._sink.job(
                f"job {job.id} on {job.channel}: status {result.status} in {elapsed_ms:.1f} ms{stderr}",
                job, result.status, elapsed_ms,
            )  # fmt: skip

    def retrying(self, job: Job, reason: str, attempt: int, delay: float) -> None:
        self._say(
            logging.WARNING, job, "job %d on %s: %s; attempt %d, retrying in %.2f s",
            job.id, job.channel, reason, attempt, delay,
        )  # fmt: skip

    def failed(self, job: Job, reason: str) -> None:
        self._say(
            logging.ERROR, job, "job %d on %s failed: %s; message %s",
            job.id, job.channel, reason, preview(job.payload or job.body),
        )  # fmt: skip

    def given_up(self, job: Job, seconds: float, retry_for: float, reason: str) -> None:
        self._say(
            logging.ERROR, job, "job %d on %s given up: the pool could not take it for %.1f s since it "
            "arrived (retry_for %g s): %s; message %s",
            job.id, job.channel, seconds, retry_for, reason, preview(job.payload or job.body),
        )  # fmt: skip

    def dropped_trace(self, job: Job, what: str) -> None:
        self._say(logging.WARNING, job, "job %d on %s: %s", job.id, job.channel, what)

    def refused(self, job: Job, reason: str) -> None:
        self._say(
            logging.ERROR, job, "job %d on %s not run: %s; message %s",
            job.id, job.channel, reason, preview(job.payload),
        )  # fmt: skip

    def no_room(self, job: Job, queued: int) -> None:
        self._say(
            logging.WARNING, job,
            "job %d on %s: no room in the queue (%d queued): entry %s left pending, claimed after claim_idle",
            job.id, job.channel, queued, job.message_id,
        )  # fmt: skip

    def release_gone(self, job: Job) -> None:
        self._say(
            logging.WARNING, job,
            "job %d on %s: release %s is gone from this host (the pool found no %s): it waits for it",
            job.id, job.channel, job.release, job.script,
        )  # fmt: skip

    def running_on(self, job: Job, reason: str) -> None:
        # The pool has it; with ignore_user_abort on (commands.conf) it runs to its end.
        self._say(
            logging.WARNING, job,
            "job %d on %s still running in the pool (%s): its outcome will not be logged",
            job.id, job.channel, reason,
        )  # fmt: skip

    def undone(self, job: Job, reason: str) -> None:
        if job.published:
            what = f"message {preview(job.payload)}"
        else:
            what = f"entry {job.message_id} stays pending, for another consumer"
        self._say(logging.ERROR, job, "job %d on %s left undone (%s); %s", job.id, job.channel, reason, what)
