"""Where pub/sub messages go when the dispatcher has no room for them: into spill files, to be
replayed oldest first when there is room (and at the next start), or, when they are full or there
is no ``state_dir``, dropped with at most one ERROR line a second. A drop storm then costs a
buffered write or a counter, not a log line, so the daemon keeps reading at Redis's speed.

The order holds across files, ``spill.<n>``, replayed by rising ``n``. New messages that find no
room go to the last file, and every message after them too, as long as any wait. Jobs that were
queued already and must leave the queue (the pool unreachable for retry_for, or still queued
when a drain ends) are older than everything kept: they go to a new first file.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from asyncphp.core.jobs import Counters, Outcome
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.spill import FILE_NAME, DropReport, Spill, SpillDamaged, SpilledMessage, SpillError

SEGMENT = re.compile(rf"^{re.escape(FILE_NAME)}\.(-?\d+)$")
REST = 1.0  # seconds between tries of a spill file that could not be written or read


class Overflow:
    def __init__(
        self, state_dir: str, max_bytes: int, counters: Counters, metrics: Metrics, log: logging.Logger
    ) -> None:
        self._counters = counters
        self._metrics = metrics
        self._log = log
        self._drops = DropReport()
        self._max_bytes = max_bytes
        self._directory = Path(state_dir) if state_dir else None
        self._segments: list[tuple[int, Spill]] = []  # by rising number: the oldest records first
        self._filling = False  # messages are going to the spill files: said once, until they empty
        self._failure = ""  # why the files could not be written, until they can again
        self._rest_until = 0.0
        if self._directory is None:
            return
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            names = os.listdir(self._directory)
        except OSError as exc:
            raise SpillError(f"state_dir {self._directory}: {exc.strerror or exc}") from exc
        numbers = sorted(int(m[1]) for name in names if (m := SEGMENT.match(name)))
        for number in numbers:
            try:
                spill = Spill.open(self._directory, max_bytes, f"{FILE_NAME}.{number}")
            except SpillDamaged as exc:
                # Which of its records already ran is unknown: kept for a person to look at, never
                # replayed, and the daemon starts.
                aside = self._set_aside(self._directory / f"{FILE_NAME}.{number}")
                log.error("%s: set aside as %s, its messages not replayed", exc, aside.name)
                continue
            if spill.discarded_bytes:
                log.error(
                    "spill file %s: %d bytes of a message cut off when the daemon last stopped: discarded",
                    spill.path, spill.discarded_bytes,
                )  # fmt: skip
            self._segments.append((number, spill))
        if self.waiting:
            self._filling = True  # so that the end of their replay is said too
            log.warning(
                "spill files in %s hold %d messages from before: they run first", state_dir, self.waiting
            )

    @staticmethod
    def _set_aside(path: Path) -> Path:
        for n in itertools.count(1):
            aside = path.with_name(f"{path.name}.damaged-{n}")
            if not aside.exists():
                try:
                    path.rename(aside)
                except OSError as exc:
                    raise SpillError(f"cannot set the damaged {path} aside: {exc.strerror or exc}") from exc
                return aside
        raise AssertionError("unreachable")

    @property
    def keeps(self) -> bool:
        """There is a state_dir for spill files (they may be full)."""
        return self._directory is not None

    @property
    def waiting(self) -> int:
        """Messages kept, not yet replayed."""
        return sum(spill.pending for _, spill in self._segments)

    @property
    def replayable(self) -> bool:
        """Messages are waiting, and the files worked at the last try (or a second has passed)."""
        return bool(self._segments) and self.waiting > 0 and time.monotonic() >= self._rest_until

    def configure(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def keep(self, channel: str, payload: bytes, why: str) -> None:
        """A new message with no room in the queue; ``why`` says so. It goes behind all kept."""
        if self._directory is None:
            self._drop(channel, payload, f"{why} and no state_dir is set for a spill file")
            return
        try:
            spill = self._segments[-1][1] if self._segments else self._segment(0)
        except SpillError as exc:
            self._cannot_write(exc)
            self._drop(channel, payload, f"{why} and the spill files cannot be written ({self._failure})")
            return
        self._keep(spill, channel, payload, time.time(), 1, why)

    def keep_older(self, messages: Iterable[tuple[str, bytes, float, int]], why: str) -> None:
        """Jobs that were queued and must leave the queue, oldest first (channel, payload, wall
        time received, the attempt their next request carries): they go before everything kept."""
        spill: Spill | None = None
        for channel, payload, received, attempt in messages:
            if spill is None and not self._failure:
                first = self._segments[0][0] - 1 if self._segments else 0
                try:
                    spill = self._segment(first)
                except SpillError as exc:
                    self._cannot_write(exc)
            if spill is None:
                self._drop(channel, payload, f"{why} and the spill files cannot be written ({self._failure})")
            else:
                self._keep(spill, channel, payload, received, attempt, why)

    def _segment(self, number: int) -> Spill:
        assert self._directory is not None
        spill = Spill.open(self._directory, self._max_bytes, f"{FILE_NAME}.{number}")
        self._segments.append((number, spill))
        self._segments.sort(key=lambda item: item[0])
        return spill

    def _keep(
        self, spill: Spill, channel: str, payload: bytes, received: float, attempt: int, why: str
    ) -> None:
        # One bound for all files: what the others hold is taken off this one's room. While they
        # cannot be written, nothing more is kept in memory waiting for them.
        spill.max_bytes = self._max_bytes - sum(s.pending_bytes for _, s in self._segments if s is not spill)
        if not self._failure and spill.append(channel, payload, received, attempt):
            self._counters.spilled += 1
            self._metrics.spilled(channel)
            if not self._filling:
                self._filling = True
                self._log.warning(
                    "%s: messages on %s go to the spill files in %s, to run when there is room", why, channel,
                    self._directory,
                )  # fmt: skip
            return
        if self._failure:
            reason = f"{why} and the spill files cannot be written ({self._failure})"
        else:
            reason = f"{why} and the spill files hold max_spill_bytes ({self._max_bytes})"
        self._drop(channel, payload, reason)

    def _drop(self, channel: str, payload: bytes, reason: str) -> None:
        self._counters.dropped += 1
        self._metrics.ended(channel, Outcome.DROPPED, -1.0)
        line = self._drops.drop(channel, payload, time.monotonic(), reason=reason)
        if line:
            self._log.error("%s", line)

    def take(self, limit: int) -> list[SpilledMessage]:
        """Up to ``limit`` kept messages, oldest first; none if a file cannot be read (then the
        files rest a second, and the line says so)."""
        taken: list[SpilledMessage] = []
        try:
            for _, spill in self._segments:
                if len(taken) == limit:
                    break
                if spill.pending:
                    taken += spill.take(limit - len(taken))
        except SpillError as exc:
            self._rest_until = time.monotonic() + REST
            self._log.error("%s; the messages kept there are replayed once it works again", exc)
        self._forget_empty()
        if self._filling and not self.waiting:
            self._filling = False
            self._log.warning("spill files replayed: every message kept there is back in the queue")
        return taken

    def _forget_empty(self) -> None:
        # All but the last: the newest takes what comes next.
        while len(self._segments) > 1 and not self._segments[0][1].pending:
            _, spill = self._segments.pop(0)
            with contextlib.suppress(SpillError):
                spill.close()
            _remove(spill)

    def turn(self, now: float) -> None:
        """Once per loop turn: write what was kept (resting a second after a failure), and say
        what was dropped."""
        if now >= self._rest_until:
            try:
                for _, spill in self._segments:
                    spill.flush()
            except SpillError as exc:
                self._cannot_write(exc)
            else:
                if self._failure:
                    self._failure = ""
                    self._log.warning("spill files writable again")
        line = self._drops.due(now)
        if line:
            self._log.error("%s", line)

    def _cannot_write(self, exc: SpillError) -> None:
        """A spill file could not be written (a full disk): rest a second, keep nothing new in
        memory meanwhile, and say so once."""
        self._rest_until = time.monotonic() + REST
        if not self._failure:
            unwritten = sum(s.unwritten for _, s in self._segments)
            self._log.error(
                "%s; %d message(s) kept in memory until it can be written, new ones dropped meanwhile",
                exc, unwritten,
            )  # fmt: skip
        self._failure = str(exc).rpartition(": ")[2]

    def close(self) -> None:
        """Write what is kept, say what was dropped; safe to call twice."""
        line = self._drops.flush()
        if line:
            self._log.error("%s", line)
        for _, spill in self._segments:
            unwritten = spill.unwritten
            try:
                spill.close()
            except SpillError as exc:
                self._counters.dropped += unwritten
                self._log.error("%s: %d message(s) kept in memory for it are lost", exc, unwritten)
        for _, spill in self._segments:
            if not spill.pending:
                _remove(spill)
        self._segments.clear()


def _remove(spill: Spill) -> None:
    """An emptied spill file goes: what is left of the files is what waits."""
    with contextlib.suppress(OSError):
        os.unlink(spill.path)
