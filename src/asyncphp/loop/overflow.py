"""Where pub/sub messages go when the dispatcher has no room for them: into the spill file, to be
replayed oldest first when there is room (and at the next start), or, when it is full or there is
no ``state_dir``, dropped with at most one ERROR line a second. A drop storm then costs a
buffered write or a counter, not a log line, so the daemon keeps reading at Redis's speed.

Two files keep the order. New messages that find no room go to ``spill``, and every message
after them too, as long as any wait there. Jobs that were already queued, and must leave the
queue (given up for an unreachable pool, or still queued when a drain ends), are older than
all of those: they go to ``spill.requeued``, which is replayed first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from asyncphp.core.jobs import Counters, Outcome
from asyncphp.loop.spill import FILE_NAME, DropReport, NoSpill, Spill, SpilledMessage, SpillError
from asyncphp.ops.metrics import Metrics

REQUEUED = FILE_NAME + ".requeued"


class Overflow:
    def __init__(
        self, state_dir: str, max_bytes: int, counters: Counters, metrics: Metrics, log: logging.Logger
    ) -> None:
        self._counters = counters
        self._metrics = metrics
        self._log = log
        self._drops = DropReport()
        self._max_bytes = max_bytes
        self._older: Spill | NoSpill = NoSpill()  # replayed first
        self._newer: Spill | NoSpill = NoSpill()
        self._filling = False  # messages are going to the spill file: said once, until it empties
        self._unreadable_until = 0.0  # after a failed read or write, a second's rest before the next
        if state_dir:
            self._older = self._open(Path(state_dir), REQUEUED)
            self._newer = self._open(Path(state_dir), FILE_NAME)
            if self.waiting:
                log.warning(
                    "spill files in %s hold %d messages from before: they run first", state_dir, self.waiting
                )

    def _open(self, directory: Path, name: str) -> Spill:
        spill = Spill.open(directory, self._max_bytes, name)
        if spill.discarded_bytes:
            self._log.error(
                "spill file %s: %d bytes of a message cut off when the daemon last stopped: discarded",
                spill.path, spill.discarded_bytes,
            )  # fmt: skip
        return spill

    @property
    def keeps(self) -> bool:
        """There is a spill file (it may be full)."""
        return not isinstance(self._newer, NoSpill)

    @property
    def waiting(self) -> int:
        """Messages kept, not yet replayed."""
        return self._older.pending + self._newer.pending

    @property
    def replayable(self) -> bool:
        """Messages are waiting, and the files worked at the last try (or a second has passed)."""
        return bool(self.waiting) and time.monotonic() >= self._unreadable_until

    def configure(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def keep(self, channel: str, payload: bytes, why: str) -> None:
        """A new message with no room in the queue; ``why`` says so."""
        self._keep(self._newer, channel, payload, time.time(), 1, why)

    def keep_older(self, channel: str, payload: bytes, received: float, attempt: int, why: str) -> None:
        """A job that was queued and must leave the queue: it goes before every new message kept,
        with the attempt its next request carries."""
        self._keep(self._older, channel, payload, received, attempt, why)

    def _keep(
        self, spill: Spill | NoSpill, channel: str, payload: bytes, received: float, attempt: int, why: str
    ) -> None:
        # One bound for both files: what the other holds is taken off this one's room.
        other = self._newer if spill is self._older else self._older
        spill.max_bytes = self._max_bytes - other.pending_bytes
        if spill.append(channel, payload, received, attempt):
            self._counters.spilled += 1
            self._metrics.spilled(channel)
            if not self._filling:
                self._filling = True
                self._log.warning(
                    "%s: messages on %s go to the spill file %s, to run when there is room", why, channel,
                    spill.path,
                )  # fmt: skip
            return
        self._counters.dropped += 1
        self._metrics.ended(channel, Outcome.DROPPED, -1.0)
        if not self.keeps:
            reason = f"{why} and no state_dir is set for a spill file"
        else:
            reason = f"{why} and the spill files hold max_spill_bytes ({self._max_bytes})"
        line = self._drops.drop(channel, payload, time.monotonic(), reason=reason)
        if line:
            self._log.error("%s", line)

    def take(self, limit: int) -> list[SpilledMessage]:
        """Up to ``limit`` kept messages, oldest first; none if the files cannot be read or written
        (a full disk): they stay there, and the line says so."""
        try:
            taken = self._older.take(limit) if self._older.pending else []
            if len(taken) < limit and self._newer.pending:
                taken += self._newer.take(limit - len(taken))
        except SpillError as exc:
            self._unreadable_until = time.monotonic() + 1.0
            self._log.error("%s; the messages kept there are replayed once it works again", exc)
            return []
        if self._filling and not self.waiting:
            self._filling = False
            self._log.warning("spill files replayed: every message kept there is back in the queue")
        return taken

    def turn(self, now: float) -> None:
        """Once per loop turn: write what was kept, and say what was dropped."""
        for spill in (self._older, self._newer):
            try:
                spill.flush()
            except SpillError as exc:
                self._log.error("%s; kept in memory until it can be written", exc)
        line = self._drops.due(now)
        if line:
            self._log.error("%s", line)

    def close(self) -> None:
        line = self._drops.flush()
        if line:
            self._log.error("%s", line)
        for spill in (self._older, self._newer):
            try:
                spill.close()
            except SpillError as exc:
                self._log.error("%s: messages kept since the last write are lost", exc)
