"""Where pub/sub messages go when the dispatcher has no room for them: into spill files, to be
replayed oldest first when there is room (and at the next start), or, when they are full or there
is no ``state_dir``, dropped with at most one ERROR line a second. A drop storm then costs a
buffered write or a counter, not a log line, so the daemon keeps reading at Redis's speed.

The order holds across files, ``spill.<n>``, replayed by rising ``n``. New messages that find no
room go to the last file, and every message after them too, as long as any wait. Jobs that were
queued already and must leave the queue (the pool unreachable for retry_for, or still queued
when a drain ends) are older than everything kept: they go to a new first file.

The files are written without fsync: they are there to survive a restart of the daemon, and a
machine that crashes has lost the messages Redis was still sending it anyway, so paying a disk
flush per loop turn would buy nothing. (A SQLite store in WAL mode was measured against them,
``python -m benchmarks.spill``: two to five times the cost per message kept, and loop turns ten
times longer or more, in the burst that fills them; README, "No room in the queue".)

File format (little-endian)::

    header   8s magic b"APSPILL\\0" · u32 version (1) · u32 reserved (0)
             · u64 read offset · u64 end of records (0: the end of the file)
    record   f64 received (time.time()) · u32 attempt · u32 channel length · u32 payload length
             · channel (UTF-8) · payload (raw bytes)

Records are appended after the last one, a loop turn's in one write; the read offset in the
header points at the first record not yet taken and is rewritten in place after each ``take()``.
When every record has been taken, the file is cut back to its header. When it never empties
(replay keeps pace with a steady overflow), the records left are copied to the front once the
space taken before them exceeds ``max_bytes``, so the file stays under about twice ``max_bytes``;
the end field marks where the copy ends until the file is cut there.

Two classes: ``Overflow`` decides (where a message goes, the one bound for all files, what is
dropped and said) and ``Spill`` only moves one file's bytes, never logging nor reading the clock.
A message goes to disk in one pass: ``Overflow.keep()`` checks the bound and copies it into the
buffer of the file it goes to; ``turn()`` writes each buffer with one ``pwrite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import re
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from asyncphp.core.jobs import Counters, Outcome
from asyncphp.logfmt import preview
from asyncphp.loop.metrics import Metrics

MAGIC = b"APSPILL\0"
VERSION = 1
FILE_NAME = "spill"

_HEADER = struct.Struct("<8sIIQQ")
_RECORD = struct.Struct("<dIII")
HEADER_SIZE = _HEADER.size
RECORD_OVERHEAD = _RECORD.size
# Large enough that opening or replaying a full spill file takes few reads, small enough not to
# hold much more than one batch in memory.
_CHUNK = 1 << 18


class SpillError(Exception):
    """The spill file cannot be used: not a spill file, or the file system refused."""


class SpillDamaged(SpillError):
    """The file's header is not one this module writes: which records were taken is unknown."""


@dataclasses.dataclass(frozen=True, slots=True)
class SpilledMessage:
    """One message as it was appended; ``received`` is the caller's time.time() at arrival, and
    ``attempt`` the ASYNCPHP_ATTEMPT its next request carries (above 1 when an earlier request may
    have run), so that a job's attempts do not start over through the spill file."""

    channel: str
    payload: bytes
    received: float
    attempt: int = 1


class Spill:
    """An append-only file of messages, read back oldest first. Use ``Spill.open()``.

    ``append()`` only copies into memory; ``flush()`` (once per loop turn) writes what was
    appended; ``take()`` reads what is written, then what is still in memory. The caller keeps
    the bound (``max_bytes`` here only says when to compact).
    """

    def __init__(
        self, path: Path, fd: int, max_bytes: int, start: int, end: int, pending: int, discarded: int
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.discarded_bytes = discarded
        """Bytes of a torn last record cut off by ``open()``: the process died while writing it."""
        self._fd = fd
        self._closed = False
        self._read_offset = start
        # Everything before _written is in the file; _buffer holds what comes after it.
        self._written = end
        self._buffer = bytearray()
        self._pending = pending
        self.unwritten = 0  # records appended and still only in memory
        # Set while the header still says records end here (a compaction whose last steps
        # failed): the file must be cut there before anything is written after it.
        self._cut_at: int | None = None

    @classmethod
    def open(cls, directory: Path, max_bytes: int, name: str = FILE_NAME) -> Spill:
        """Open ``directory/name``, creating both if missing; earlier records stay to be replayed.

        ``discarded_bytes`` on the result says how much of a torn last record was cut off.

        Raises:
            SpillError: the directory or file cannot be created or read, or the file is not a
                spill file.
        """
        path = directory / name
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # 0o600: payloads are the application's data, not something for every local user.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise SpillError(f"cannot open the spill file {path}: {e.strerror or e}") from e
        try:
            return cls(path, fd, max_bytes, *_recover(fd, path))
        except BaseException:
            os.close(fd)
            raise

    @property
    def pending(self) -> int:
        """Records appended and not yet taken."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """Size of those records, as the caller counts them against its bound."""
        return self._written + len(self._buffer) - self._read_offset

    def append(self, channel: str, payload: bytes, received: float, attempt: int = 1) -> None:
        """Keep one message, in memory until ``flush()``."""
        if self._closed:
            raise SpillError(f"{self.path}: append() after close()")
        self.append_encoded(channel.encode("utf-8", "surrogateescape"), payload, received, attempt)

    def append_encoded(self, name: bytes, payload: bytes, received: float, attempt: int) -> None:
        """``append()`` with the channel already encoded (as UTF-8, surrogateescape), unchecked:
        the path of a burst, where ``Overflow`` has measured it for the bound."""
        buffer = self._buffer
        buffer += _RECORD.pack(received, attempt, len(name), len(payload))
        buffer += name
        buffer += payload
        self._pending += 1
        self.unwritten += 1

    def flush(self) -> None:
        """Write what ``append()`` kept in memory.

        Raises:
            SpillError: the write failed (a full disk); what was not written stays in memory and
                the next flush tries again.
        """
        if not self._buffer:
            return
        start, done = self._written, 0
        try:
            if self._cut_at is not None:
                os.ftruncate(self._fd, self._cut_at)
                self._write_header(self._read_offset)
                self._cut_at = None
            with memoryview(self._buffer) as view:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], start + done)
        except OSError as e:
            # All or nothing: a record cut in two by a full disk would stand between the records
            # on disk and those still in memory, and neither could be read past it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise SpillError(f"cannot write the spill file {self.path}: {e.strerror or e}") from e
        self._written = start + done
        self._buffer.clear()
        self.unwritten = 0

    def take(self, limit: int) -> list[SpilledMessage]:
        """Remove and return up to ``limit`` of the oldest records: those in the file first, then
        those still in memory, which need never be written. Reading does not wait for writing, so
        a disk too full to take more still gives back what it holds.

        They count as replayed as soon as this returns: a restart does not bring them back.

        Raises:
            SpillError: reading or updating the file failed; nothing was taken.
        """
        if self._closed:
            raise SpillError(f"{self.path}: take() after close()")
        taken: list[SpilledMessage] = []
        if self._read_offset < self._written:
            self._take_written(limit, taken)
        if len(taken) < limit and self._buffer and self._read_offset == self._written:
            self._take_unwritten(limit - len(taken), taken)
        return taken

    def _take_unwritten(self, limit: int, into: list[SpilledMessage]) -> None:
        buffer, pos, count = self._buffer, 0, 0
        while count < limit and pos < len(buffer):
            received, attempt, name_size, payload_size = _RECORD.unpack_from(buffer, pos)
            start = pos + RECORD_OVERHEAD
            name_end = start + name_size
            channel = bytes(buffer[start:name_end]).decode("utf-8", "surrogateescape")
            payload = bytes(buffer[name_end : name_end + payload_size])
            into.append(SpilledMessage(channel, payload, received, attempt))
            pos, count = name_end + payload_size, count + 1
        del buffer[:pos]
        self._pending -= count
        self.unwritten -= count

    def _take_written(self, limit: int, taken: list[SpilledMessage]) -> None:
        offset = self._read_offset
        try:
            while len(taken) < limit and offset < self._written:
                offset = self._read_some(offset, limit, taken)
            if not taken:
                return
            self._write_header(offset, self._cut_at or 0)
        except OSError as e:
            raise SpillError(f"cannot read or update the spill file {self.path}: {e.strerror or e}") from e
        self._read_offset = offset
        self._pending -= len(taken)
        # The records are taken whatever happens below: a failure there leaves the file
        # consistent (see each step), so it costs disk space, not an error.
        with contextlib.suppress(OSError):
            if offset == self._written:
                # Cut before resetting the offset: dying in between leaves an offset past the end,
                # which open() reads as "nothing left". Cut but not reset, the next record goes at
                # the old offset after a hole nobody reads.
                os.ftruncate(self._fd, HEADER_SIZE)
                self._write_header(HEADER_SIZE)
                self._read_offset = self._written = HEADER_SIZE
                self._cut_at = None
            elif offset - HEADER_SIZE >= max(self.max_bytes, self._written - offset):
                self._compact()

    def _read_some(self, offset: int, limit: int, into: list[SpilledMessage]) -> int:
        """Parse records from one read at ``offset`` into ``into``, until it holds ``limit``;
        returns the offset after them."""
        chunk = os.pread(self._fd, min(_CHUNK, self._written - offset), offset)
        pos = 0
        while len(into) < limit and pos + RECORD_OVERHEAD <= len(chunk):
            received, attempt, name_size, payload_size = _RECORD.unpack_from(chunk, pos)
            start = pos + RECORD_OVERHEAD
            end = start + name_size + payload_size
            if end > len(chunk):
                if pos > 0:
                    break
                # One record larger than a chunk: read exactly that record.
                chunk = os.pread(self._fd, end, offset)
                if len(chunk) < end:
                    break
                continue
            name_end = start + name_size
            channel = chunk[start:name_end].decode("utf-8", "surrogateescape")
            into.append(SpilledMessage(channel, chunk[name_end:end], received, attempt))
            pos = end
        if pos == 0:
            # open() checked every record up to _written, so only another writer can get here.
            raise SpillError(f"{self.path}: the file is shorter than this process wrote it")
        return offset + pos

    def _compact(self) -> None:
        """Move the records not yet taken to the front of the file.

        Only called when the space before them is at least their size, so the copy never
        overwrites what it copies and the file stays valid at every step.
        """
        size = self._written - self._read_offset
        copied = 0
        while copied < size:
            data = os.pread(self._fd, min(_CHUNK, size - copied), self._read_offset + copied)
            if not data:
                return  # cut short by something else; take() will say so
            while data:
                n = os.pwrite(self._fd, data, HEADER_SIZE + copied)
                copied += n
                data = data[n:]
        end = HEADER_SIZE + size
        # From this write on the copy is the one that counts; the end field hides the old
        # records behind it until the file is cut.
        self._write_header(HEADER_SIZE, end)
        self._read_offset, self._written, self._cut_at = HEADER_SIZE, end, end
        os.ftruncate(self._fd, end)
        self._write_header(HEADER_SIZE)
        self._cut_at = None

    def _write_header(self, read_offset: int, end: int = 0) -> None:
        os.pwrite(self._fd, _HEADER.pack(MAGIC, VERSION, 0, read_offset, end), 0)

    def close(self) -> None:
        """Write what is still in memory and close the file; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            os.close(self._fd)

    def __enter__(self) -> Spill:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Spill {self.path} · {self._pending} pending · {self.pending_bytes}/{self.max_bytes} bytes>"


def _recover(fd: int, path: Path) -> tuple[int, int, int, int]:
    """Check the header, finish an interrupted compaction and walk the records not yet taken.

    Returns (read offset, end of the last whole record, records pending, bytes cut off).
    """
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_SIZE, 0)
        fresh = _HEADER.pack(MAGIC, VERSION, 0, HEADER_SIZE, 0)
        # A file shorter than a header that matches the start of one was being created when the
        # process died; it holds nothing.
        if size < HEADER_SIZE and head == fresh[:size]:
            os.ftruncate(fd, 0)
            os.pwrite(fd, fresh, 0)
            return HEADER_SIZE, HEADER_SIZE, 0, 0
        if size < HEADER_SIZE or head[:8] != MAGIC:
            raise SpillDamaged(f"{path} is not an asyncphp spill file (it starts with {preview(head[:8])})")
        _, version, _, read_offset, end = _HEADER.unpack(head)
        if version != VERSION:
            raise SpillDamaged(f"{path}: spill file version {version}, this asyncphp reads version {VERSION}")
        if read_offset < HEADER_SIZE:
            raise SpillDamaged(f"{path}: the read offset {read_offset} points into the header")
        if end:
            size = min(size, end)
            os.ftruncate(fd, size)
            os.pwrite(fd, _HEADER.pack(MAGIC, VERSION, 0, read_offset, 0), 0)
        if read_offset >= size:
            # Everything was taken (see take() for how the offset can end up past the end).
            if size > HEADER_SIZE or read_offset > size:
                os.ftruncate(fd, HEADER_SIZE)
                os.pwrite(fd, fresh, 0)
            return HEADER_SIZE, HEADER_SIZE, 0, 0

        offset, pending = read_offset, 0
        while offset + RECORD_OVERHEAD <= size:
            chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
            pos, torn = 0, False
            while pos + RECORD_OVERHEAD <= len(chunk):
                _, _, name_size, payload_size = _RECORD.unpack_from(chunk, pos)
                following = pos + RECORD_OVERHEAD + name_size + payload_size
                if offset + following > size:
                    torn = True
                    break
                pending += 1
                # May point past this chunk when the record is larger than what is left of it.
                pos = following
            offset += pos
            if torn or pos == 0:
                break
        discarded = size - offset
        if discarded:
            os.ftruncate(fd, offset)
        return read_offset, offset, pending, discarded
    except OSError as e:
        raise SpillError(f"cannot read the spill file {path}: {e.strerror or e}") from e


class DropReport:
    """Messages that could not be kept, turned into at most one log line per ``interval``.

    The first drop after a quiet interval is reported at once by ``drop()``; later ones are
    counted and reported by ``due()`` (call it once per loop turn) when the interval has passed.
    ``now`` is any monotonic clock in seconds; this class never reads one.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.total = 0
        self._started: float | None = None
        self._by_channel: dict[str, int] = {}
        self._reasons: dict[str, None] = {}
        self._first = b""

    def drop(self, channel: str, payload: bytes, now: float, *, reason: str) -> str | None:
        """Count one dropped message; returns a line to log now, or None to wait for ``due()``."""
        self.total += 1
        if not self._by_channel:
            self._first = payload
        self._by_channel[channel] = self._by_channel.get(channel, 0) + 1
        self._reasons[reason] = None
        if self._started is not None and now - self._started < self.interval:
            return None
        self._started = now
        return self._line()

    def due(self, now: float) -> str | None:
        """The line for the drops counted since the last one, once ``interval`` has passed."""
        if self._started is None or now - self._started < self.interval:
            return None
        if not self._by_channel:
            self._started = None
            return None
        self._started = now
        return self._line()

    def flush(self) -> str | None:
        """The line for the drops not reported yet, whatever the time (at a stop)."""
        self._started = None
        return self._line() if self._by_channel else None

    def _line(self) -> str:
        count = sum(self._by_channel.values())
        if len(self._by_channel) == 1:
            where = next(iter(self._by_channel))
        else:
            where = ", ".join(f"{name} ({n})" for name, n in self._by_channel.items())
        reasons = "; ".join(self._reasons)
        first = preview(self._first)
        self._by_channel = {}
        self._reasons = {}
        self._first = b""
        if count == 1:
            return f"dropped a message on {where} ({reasons}; {self.total} dropped so far): {first}"
        return f"dropped {count} messages on {where} ({reasons}; {self.total} dropped so far); first: {first}"


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
        self._bytes = 0  # the pending_bytes of all segments: the one bound is kept here
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
            self._bytes += spill.pending_bytes
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
        for _, spill in self._segments:
            spill.max_bytes = max_bytes

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
        # One bound for all files. While they cannot be written, nothing more is kept in memory
        # waiting for them.
        name = channel.encode("utf-8", "surrogateescape")
        size = RECORD_OVERHEAD + len(name) + len(payload)
        if not self._failure and self._bytes + size <= self._max_bytes:
            spill.append_encoded(name, payload, received, attempt)
            self._bytes += size
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
        if taken:
            self._bytes = sum(spill.pending_bytes for _, spill in self._segments)
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
        self._bytes = 0


def _remove(spill: Spill) -> None:
    """An emptied spill file goes: what is left of the files is what waits."""
    with contextlib.suppress(OSError):
        os.unlink(spill.path)
