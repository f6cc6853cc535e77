"""The spill store in SQLite: a candidate measured beside the spill files (loop/overflow.py) by
``python -m benchmarks.spill``, not used by the daemon; kept so that the comparison can be run
again. Its Overflow has the daemon's interface and behaviour (the unit tests of the files' pass on
it but for the file names); what follows is its description as written for loop/.

Where pub/sub messages go when the dispatcher has no room for them: into the spill store, to be
replayed oldest first when there is room (and at the next start), or, when it is full or there
is no ``state_dir``, dropped with at most one ERROR line a second. A drop storm then costs a
buffered row or a counter, not a log line, so the daemon keeps reading at Redis's speed.

The store is one SQLite database, ``<state_dir>/spill.db``, in WAL mode with synchronous=NORMAL:
a loop turn's messages are one transaction, which a kill -9 leaves whole or not at all, and a
commit does not wait for the disk. It is there to survive a restart of the daemon; a machine that
crashes has lost the messages Redis was still sending it anyway. Measured against the file format
it would replace in ``benchmarks/spill.py``.

Every message has a sequence number, and the store gives them back by rising number. New messages
that find no room take the next number above all kept, and every message after them too, as long
as any wait. Jobs that were queued already and must leave the queue (the pool unreachable for
retry_for, or still queued when a drain ends) are older than everything kept: they take numbers
below all of them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from asyncphp.core.jobs import Counters, Outcome
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.overflow import DropReport, SpillDamaged, SpilledMessage, SpillError

FILE_NAME = "spill.db"
APPLICATION_ID = 0x41505350  # "APSP" in PRAGMA application_id: another SQLite file is not taken for ours
VERSION = 1  # PRAGMA user_version
# Counted per message against max_spill_bytes beside its channel and payload, as the record header
# of the file format before the store was: the bound means what it meant.
RECORD_OVERHEAD = 20
REST = 1.0  # seconds between tries of a store that could not be written or read
# Rows read ahead of take() (see Store), and their payloads' bytes, past which no more are read.
READ_AHEAD, READ_AHEAD_BYTES = 256, 1 << 18

_SCHEMA = (
    "CREATE TABLE message (seq INTEGER PRIMARY KEY, received REAL NOT NULL, attempt INTEGER NOT NULL,"
    " channel BLOB NOT NULL, payload BLOB NOT NULL)"
)
# magic, version, page size, checkpoint sequence, salt-1 and salt-2, two checksums (sqlite.org/walformat)
_WAL_HEADER = struct.Struct(">IIII8s8s")
_WAL_FRAME_HEADER = 24  # page number, size after commit, salt-1, salt-2, two checksums

Row = tuple[int, float, int, bytes, bytes]  # seq, received, attempt, channel (UTF-8), payload


def size_of(row: Row) -> int:
    """What a kept message counts against max_spill_bytes."""
    return RECORD_OVERHEAD + len(row[3]) + len(row[4])


class Store:
    """The SQLite file: rows by rising ``seq``, a batch written per transaction. Use ``Store.open()``.

    It only moves rows: it never logs and never reads the clock.
    """

    def __init__(self, path: Path, db: sqlite3.Connection, count: int, size: int, low: int, high: int):
        self.path = path
        self.count = count  # rows in the file, read ahead or not
        # At open: their size_of(), the lowest seq and one past the highest (0 and 0 when empty).
        self.bytes, self.low, self.high = size, low, high
        self.discarded_bytes = 0
        """Bytes of a write cut short that ``open()`` found: the process died while writing it."""
        self._db = db
        # The oldest rows in the file, read and not yet taken: the loop takes one message at a
        # time, and one SELECT serves many. They stay in the file until taken.
        self._ahead: list[Row] = []
        self._ahead_at = 0
        self._after = low - 1  # every row up to this seq is taken

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open ``path``, creating it if missing; what it holds stays to be replayed.

        Raises:
            SpillDamaged: the file is not a spill store, or one of another version.
            SpillError: the file cannot be created or read.
        """
        wal = _wal_header(Path(f"{path}-wal"))
        try:
            # 0o600 (SQLite gives its WAL the same): payloads are the application's data, not
            # something for every local user.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise SpillError(f"cannot open the spill file {path}: {_reason(exc)}") from exc
        try:
            store = cls._start(path, db)
            if wal is not None:
                store.discarded_bytes = _discarded(Path(f"{path}-wal"), *wal, db)
            return store
        except sqlite3.Error as exc:
            db.close()
            if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                raise SpillDamaged(f"{path} is not an asyncphp spill file ({exc})") from exc
            raise SpillError(f"cannot open the spill file {path}: {exc}") from exc
        except BaseException:
            db.close()
            raise

    @classmethod
    def _start(cls, path: Path, db: sqlite3.Connection) -> Store:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        application = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if application == version == tables == 0:
            # New, or created by a process that died before its first commit.
            db.execute("BEGIN")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {VERSION}")
            db.execute(_SCHEMA)
            db.execute("COMMIT")
        elif application != APPLICATION_ID:
            raise SpillDamaged(
                f"{path} is not an asyncphp spill file (a SQLite database of another application)"
            )
        elif version != VERSION:
            raise SpillDamaged(f"{path}: spill file version {version}, this asyncphp reads version {VERSION}")
        count, size, low, high = db.execute(
            "SELECT count(*), total(length(channel) + length(payload)), min(seq), max(seq) FROM message"
        ).fetchone()
        if not count:
            return cls(path, db, 0, 0, 0, 0)
        return cls(path, db, count, count * RECORD_OVERHEAD + int(size), low, high + 1)

    def write(self, rows: list[Row]) -> None:
        """Add ``rows``, by rising seq, all below the rows in the file or all above them; in one
        transaction.

        Raises:
            SpillError: the write failed (a full disk); nothing of it is in the file.
        """
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO message VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise SpillError(f"cannot write the spill file {self.path}: {exc}") from exc
        self.count += len(rows)
        if rows[0][0] <= self._after:
            # Older than what was read ahead: reading starts again from them.
            self._after = rows[0][0] - 1
            self._ahead, self._ahead_at = [], 0

    def take(self, limit: int) -> list[Row]:
        """Remove and return up to ``limit`` of the oldest rows. They count as replayed as soon
        as this returns: a restart does not bring them back.

        Raises:
            SpillError: reading or deleting failed; nothing was taken.
        """
        taken: list[Row] = []
        try:
            while len(taken) < min(limit, self.count):
                if self._ahead_at == len(self._ahead):
                    self._read_ahead(taken[-1][0] if taken else self._after, limit - len(taken))
                n = min(limit - len(taken), len(self._ahead) - self._ahead_at)
                taken += self._ahead[self._ahead_at : self._ahead_at + n]
                self._ahead_at += n
            if taken:
                self._db.execute("DELETE FROM message WHERE seq <= ?", (taken[-1][0],))
        except sqlite3.Error as exc:
            self._ahead, self._ahead_at = [], 0
            raise SpillError(f"cannot read or update the spill file {self.path}: {exc}") from exc
        if taken:
            self.count -= len(taken)
            self._after = taken[-1][0]
        return taken

    def _read_ahead(self, after: int, wanted: int) -> None:
        """The rows after seq ``after``: at least ``wanted`` (as many as there are), more up to
        READ_AHEAD rows or READ_AHEAD_BYTES."""
        rows: list[Row] = []
        size = 0
        cursor = self._db.execute("SELECT * FROM message WHERE seq > ? ORDER BY seq", (after,))
        try:
            for row in cursor:
                rows.append(row)
                size += len(row[4])
                if len(rows) >= wanted and (len(rows) >= READ_AHEAD or size >= READ_AHEAD_BYTES):
                    break
        finally:
            cursor.close()
        if not rows:
            # count says there are more: only another writer can get here.
            raise sqlite3.DatabaseError("the file holds fewer messages than this process wrote to it")
        self._ahead, self._ahead_at = rows, 0

    def close(self) -> None:
        """Close the file (SQLite folds the WAL into it)."""
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise SpillError(f"cannot close the spill file {self.path}: {exc}") from exc

    def remove(self) -> None:
        """Close the file and delete it, with its WAL: what is left of the store is what waits."""
        with contextlib.suppress(SpillError):
            self.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.path}{suffix}")


def _reason(exc: OSError | sqlite3.Error) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


def _wal_header(wal: Path) -> tuple[int, int, bytes] | None:
    """The WAL's size, page size and salts, read before SQLite recovers it: the salts tell this
    generation's frames from those of an earlier one left behind them."""
    try:
        with open(wal, "rb") as f:
            head = f.read(_WAL_HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < _WAL_HEADER.size:
        return None  # no frame was written after it: nothing lost
    _, _, page_size, _, salts, _ = _WAL_HEADER.unpack(head)
    return size, page_size, salts


def _discarded(wal: Path, size: int, page_size: int, salts: bytes, db: sqlite3.Connection) -> int:
    """Bytes of the WAL that SQLite's recovery (just run) threw away: the frames of this
    generation after the last committed one (the transaction a kill interrupted), whole or cut."""
    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    frame = _WAL_FRAME_HEADER + page_size
    offset = _WAL_HEADER.size + max(frames, 0) * frame
    discarded = 0
    with contextlib.suppress(OSError), open(wal, "rb") as f:
        while offset < size:
            f.seek(offset)
            head = f.read(_WAL_FRAME_HEADER)
            if len(head) == _WAL_FRAME_HEADER and head[8:16] != salts:
                break  # an earlier generation's frame: nothing of this one is lost there
            discarded += min(frame, size - offset)
            offset += frame
    return discarded


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
        self._store: Store | None = None  # opened by the first write when there was none
        # Kept and not yet written, by rising seq: older than the store's rows, and newer.
        self._older: list[Row] = []
        self._newer: list[Row] = []
        self._low = self._high = 0  # the lowest seq kept and one past the highest
        self._bytes = 0  # size_of() of everything kept, in memory or in the store
        self._filling = False  # messages are going to the store: said once, until it empties
        self._failure = ""  # why the store could not be written, until it can again
        self._rest_until = 0.0
        if self._directory is None:
            return
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpillError(f"state_dir {self._directory}: {exc.strerror or exc}") from exc
        path = self._directory / FILE_NAME
        if path.exists():
            self._store = self._reopen(path)
        if self.waiting:
            self._filling = True  # so that the end of their replay is said too
            log.warning(
                "spill files in %s hold %d messages from before: they run first", state_dir, self.waiting
            )

    def _reopen(self, path: Path) -> Store | None:
        try:
            store = Store.open(path)
        except SpillDamaged as exc:
            # Which of its messages already ran is unknown: kept for a person to look at, never
            # replayed, and the daemon starts.
            aside = _set_aside(path)
            self._log.error("%s: set aside as %s, its messages not replayed", exc, aside.name)
            return None
        if store.discarded_bytes:
            self._log.error(
                "spill file %s-wal: %d bytes of a write cut off when the daemon last stopped: discarded",
                path, store.discarded_bytes,
            )  # fmt: skip
        self._low, self._high, self._bytes = store.low, store.high, store.bytes
        return store

    @property
    def keeps(self) -> bool:
        """There is a state_dir for the spill store (it may be full)."""
        return self._directory is not None

    @property
    def waiting(self) -> int:
        """Messages kept, not yet replayed."""
        return len(self._older) + len(self._newer) + (self._store.count if self._store else 0)

    @property
    def replayable(self) -> bool:
        """Messages are waiting, and the store worked at the last try (or a second has passed)."""
        return self.waiting > 0 and time.monotonic() >= self._rest_until

    def configure(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def keep(self, channel: str, payload: bytes, why: str) -> None:
        """A new message with no room in the queue; ``why`` says so. It goes behind all kept."""
        row = (self._high, time.time(), 1, channel.encode("utf-8", "surrogateescape"), payload)
        if self._kept(row, channel, why):
            self._newer.append(row)
            self._high += 1

    def keep_older(self, messages: Iterable[tuple[str, bytes, float, int]], why: str) -> None:
        """Jobs that were queued and must leave the queue, oldest first (channel, payload, wall
        time received, the attempt their next request carries): they go before everything kept."""
        batch = list(messages)
        seq = self._low - len(batch) if self.waiting else self._high - len(batch)
        rows: list[Row] = []
        for number, (channel, payload, received, attempt) in enumerate(batch, seq):
            row = (number, received, attempt, channel.encode("utf-8", "surrogateescape"), payload)
            if self._kept(row, channel, why):
                rows.append(row)
        if rows:
            # Numbers left unused by drops are gaps, which the order does not mind.
            self._older[:0] = rows
            self._low = rows[0][0]
            self._high = max(self._high, rows[-1][0] + 1)

    def _kept(self, row: Row, channel: str, why: str) -> bool:
        """Count ``row`` in, or drop it (the store cannot be written, or is full) with a line."""
        if self._directory is None:
            self._drop(channel, row[4], f"{why} and no state_dir is set for a spill file")
            return False
        if self._failure:
            # Nothing more is kept in memory waiting for a store that cannot be written.
            self._drop(channel, row[4], f"{why} and the spill files cannot be written ({self._failure})")
            return False
        size = size_of(row)
        if self._bytes + size > self._max_bytes:
            self._drop(channel, row[4], f"{why} and the spill files hold max_spill_bytes ({self._max_bytes})")
            return False
        self._bytes += size
        self._counters.spilled += 1
        self._metrics.spilled(channel)
        if not self._filling:
            self._filling = True
            self._log.warning(
                "%s: messages on %s go to the spill files in %s, to run when there is room", why, channel,
                self._directory,
            )  # fmt: skip
        return True

    def _drop(self, channel: str, payload: bytes, reason: str) -> None:
        self._counters.dropped += 1
        self._metrics.ended(channel, Outcome.DROPPED, -1.0)
        line = self._drops.drop(channel, payload, time.monotonic(), reason=reason)
        if line:
            self._log.error("%s", line)

    def take(self, limit: int) -> list[SpilledMessage]:
        """Up to ``limit`` kept messages, oldest first; what is in memory, but none from the store
        if it cannot be read (then it rests a second, and the line says so)."""
        rows = self._older[:limit]
        del self._older[:limit]
        store = self._store
        if len(rows) < limit and store is not None and store.count:
            try:
                rows += store.take(limit - len(rows))
            except SpillError as exc:
                self._rest_until = time.monotonic() + REST
                self._log.error("%s; the messages kept there are replayed once it works again", exc)
        if len(rows) < limit and (store is None or not store.count):
            more = limit - len(rows)
            rows += self._newer[:more]
            del self._newer[:more]
        self._bytes -= sum(map(size_of, rows))  # the store's rows too: counted once, in _bytes
        if self._filling and not self.waiting:
            self._filling = False
            self._log.warning("spill files replayed: every message kept there is back in the queue")
        return [
            SpilledMessage(channel.decode("utf-8", "surrogateescape"), payload, received, attempt)
            for _, received, attempt, channel, payload in rows
        ]

    def turn(self, now: float) -> None:
        """Once per loop turn: write what was kept (resting a second after a failure), and say
        what was dropped."""
        if now >= self._rest_until:
            try:
                self._write()
            except SpillError as exc:
                self._cannot_write(exc)
            else:
                if self._failure:
                    self._failure = ""
                    self._log.warning("spill files writable again")
        line = self._drops.due(now)
        if line:
            self._log.error("%s", line)

    def _write(self) -> None:
        """What is kept in memory into the store, in one transaction.

        Raises:
            SpillError: the store cannot be opened or written; what was kept stays in memory.
        """
        if not self._older and not self._newer:
            return
        assert self._directory is not None
        if self._store is None:
            path = self._directory / FILE_NAME
            try:
                self._store = Store.open(path)
            except SpillError as exc:
                raise SpillError(
                    f"cannot write the spill file {path}: {str(exc).rpartition(': ')[2]}"
                ) from exc
        rows = self._older + self._newer
        self._store.write(rows)
        self._older.clear()
        self._newer.clear()

    def _cannot_write(self, exc: SpillError) -> None:
        """The store could not be written (a full disk): rest a second, keep nothing new in
        memory meanwhile, and say so once."""
        self._rest_until = time.monotonic() + REST
        if not self._failure:
            unwritten = len(self._older) + len(self._newer)
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
        unwritten = len(self._older) + len(self._newer)
        try:
            self._write()
        except SpillError as exc:
            self._counters.dropped += unwritten
            self._log.error("%s: %d message(s) kept in memory for it are lost", exc, unwritten)
        self._older.clear()
        self._newer.clear()
        store, self._store = self._store, None
        if store is None:
            return
        if not store.count:
            store.remove()  # an emptied store goes: what is left in state_dir is what waits
            return
        try:
            store.close()
        except SpillError as exc:
            self._log.error("%s", exc)


def _set_aside(path: Path) -> Path:
    """Rename a damaged store (and its WAL, which belongs to it) out of the way."""
    for n in itertools.count(1):
        aside = path.with_name(f"{path.name}.damaged-{n}")
        if not aside.exists():
            try:
                path.rename(aside)
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}-wal").rename(f"{aside}-wal")
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}-shm").unlink()
            except OSError as exc:
                raise SpillError(f"cannot set the damaged {path} aside: {exc.strerror or exc}") from exc
            return aside
    raise AssertionError("unreachable")
