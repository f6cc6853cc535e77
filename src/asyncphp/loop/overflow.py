"""Where pub/sub messages go when the dispatcher has no room for them: into the spill file, to be
replayed oldest first when there is room (and at the next start), or, when it is full or there is
no ``state_dir``, dropped with at most one ERROR line a second. A drop storm then costs a
buffered write or a counter, not a log line, so the daemon keeps reading at Redis's speed."""

from __future__ import annotations

import logging
from pathlib import Path

from asyncphp.core.jobs import Counters, Outcome
from asyncphp.loop.spill import DropReport, NoSpill, Spill, SpilledMessage, SpillError
from asyncphp.ops.metrics import Metrics


class Overflow:
    def __init__(
        self, state_dir: str, max_bytes: int, counters: Counters, metrics: Metrics, log: logging.Logger
    ) -> None:
        self._counters = counters
        self._metrics = metrics
        self._log = log
        self._drops = DropReport()
        self._spill: Spill | NoSpill = NoSpill()
        self._filling = False  # messages are going to the spill file: said once, until it empties
        if state_dir:
            self._spill = Spill.open(Path(state_dir), max_bytes)
            if self._spill.discarded_bytes:
                log.error(
                    "spill file %s: %d bytes of a message cut off when the daemon last stopped: discarded",
                    self._spill.path, self._spill.discarded_bytes,
                )  # fmt: skip
            if self._spill.pending:
                log.warning(
                    "spill file %s holds %d messages from before: they run first",
                    self._spill.path,
                    self._spill.pending,
                )

    @property
    def keeps(self) -> bool:
        """There is a spill file (it may be full)."""
        return not isinstance(self._spill, NoSpill)

    @property
    def waiting(self) -> int:
        """Messages in the spill file, not yet replayed."""
        return self._spill.pending

    def configure(self, max_bytes: int) -> None:
        self._spill.max_bytes = max_bytes

    def keep(self, channel: str, payload: bytes, received: float, now: float, why: str) -> None:
        """``why``: the queue is full, or the drain ended."""
        if self._spill.append(channel, payload, received):
            self._counters.spilled += 1
            self._metrics.spilled(channel)
            if not self._filling:
                self._filling = True
                self._log.warning(
                    "%s: messages on %s go to the spill file %s, to run when there is room", why, channel,
                    self._spill.path,
                )  # fmt: skip
            return
        self._counters.dropped += 1
        self._metrics.ended(channel, Outcome.DROPPED, -1.0)

        if not self.keeps:
            reason = f"{why} and no state_dir is set for a spill file"
        else:
            reason = f"{why} and the spill file holds max_spill_bytes ({self._spill.max_bytes})"
        line = self._drops.drop(channel, payload, now, reason=reason)
        if line:
            self._log.error("%s", line)

    def take(self, limit: int) -> list[SpilledMessage]:
        taken = self._spill.take(limit) if self._spill.pending else []
        if self._filling and not self._spill.pending:
            self._filling = False
            self._log.warning(
                "spill file %s replayed: every message kept there is back in the queue", self._spill.path
            )
        return taken

    def turn(self, now: float) -> None:
        """Once per loop turn: write what was kept, and say what was dropped."""
        try:
            self._spill.flush()
        except SpillError as exc:
            self._log.error("%s; kept in memory until it can be written", exc)
        line = self._drops.due(now)
        if line:
            self._log.error("%s", line)

    def close(self) -> None:
        line = self._drops.flush()
        if line:
            self._log.error("%s", line)
        try:
            self._spill.close()
        except SpillError as exc:
            self._log.error("%s: messages kept since the last write are lost", exc)
