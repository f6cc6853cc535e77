"""Where the daemon's log lines go, and the cheap path for the one line each finished job gets.

Every job that ends well gets one INFO line; at thousands of jobs a second, Python's logging
machinery (a record, a formatter, a lock and a write per line) cost more than the job itself.
So that line skips it: on stderr, lines (the job lines and every other one, in order) are
gathered and written once per turn of the event loop, just before it waits again. Under systemd
stderr is a journal stream, which journald reads line by line; warnings and errors go to the
journal as entries with their fields; with ``journal_fields``, so does every job line, at several
times the cost (docs/performance.md). Anything rarer than a finished job takes the ordinary
logging path, which ends in the same place.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import time
from collections.abc import Mapping

from asyncphp.core.jobs import Job

SYSLOG_IDENTIFIER = "asyncphp-daemon"
MAX_PENDING = 1 << 20  # bytes of lines waiting for a full stderr; past it, lines are dropped


def job_fields(job: Job, status: int = 0, elapsed_ms: float = -1.0) -> dict[str, object]:
    """Structured journal fields for a job's log line (a stderr sink has no use for them)."""
    fields: dict[str, object] = {"ASYNCPHP_CHANNEL": job.channel, "ASYNCPHP_REQUEST_ID": job.id}
    if job.message_id:
        fields["ASYNCPHP_MESSAGE_ID"] = job.message_id
    if job.release:
        fields["ASYNCPHP_RELEASE"] = job.release
    if status:
        fields["ASYNCPHP_STATUS"] = status
    if elapsed_ms >= 0:
        fields["ASYNCPHP_DURATION_MS"] = round(elapsed_ms, 1)
    return fields


class Sink:
    """Where lines end: :meth:`job` for a finished job's INFO line, ``handlers`` (for the logger)
    for every other line, and :meth:`flush` once per turn of the loop."""

    handlers: list[logging.Handler]

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        raise NotImplementedError

    def flush(self, wait: float = 0.0) -> None:
        """Write what was gathered (the loop calls this before it waits); ``wait`` seconds at most
        for a full non-blocking stderr (at exit), else what it cannot take waits for the next turn."""


class StderrSink(Sink):
    """Lines on stderr, written together: one ``write`` per turn of the loop. With ``journald``
    (stderr is a journal stream) each line starts with its syslog priority, ``<6>``, which
    journald takes as the entry's PRIORITY, and no timestamp, which it adds itself.

    A stderr that is a non-blocking pipe whose reader has stopped never holds the loop: lines
    wait, up to MAX_PENDING bytes of them, and past that are dropped, and said to be once there is
    room again."""

    def __init__(self, fd: int = 2, journald: bool = False) -> None:
        self._fd = fd
        self._journald = journald
        self._lines: list[str] = []
        self._pending = bytearray()  # whole lines not yet written (the first, maybe in part)
        self._second = -1
        self._stamp = ""
        self.dropped = 0  # lines let go because stderr stayed full
        self._unsaid = 0  # of those, not yet said in a line
        self.handlers = [_Gathered(self)]

    def add(self, level: str, text: str) -> None:
        self._lines.append(self._line(level, text))

    def _line(self, level: str, text: str) -> str:
        if self._journald:
            prefix = f"<{_PRIORITY.get(level, 6)}>"
            if "\n" in text:  # a traceback: every line of it an entry at the record's priority
                text = text.replace("\n", "\n" + prefix)
            return f"{prefix}{level} {text}\n"
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d} {level} {text}\n"

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        self.add("INFO", text)

    def flush(self, wait: float = 0.0) -> None:
        if self._lines:
            self._take()
        while self._pending:
            try:
                written = os.write(self._fd, self._pending)
            except BlockingIOError:
                if wait <= 0 or not select.select([], [self._fd], [], wait)[1]:
                    return  # the next flush goes on from here
                continue
            except OSError:
                self._pending.clear()  # stderr is gone (closed, EPIPE): nowhere to say anything
                return
            del self._pending[:written]

    def _take(self) -> None:
        """The gathered lines into the bytes to write, as many as MAX_PENDING allows."""
        if self._unsaid and len(self._pending) < MAX_PENDING:
            lost, self._unsaid = self._unsaid, 0
            self._pending += self._line("WARNING", f"{lost} log line(s) dropped: stderr was full").encode()
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        if len(self._pending) + len(data) <= MAX_PENDING:
            self._pending += data
        else:
            for line in self._lines:
                encoded = line.encode("utf-8", "backslashreplace")
                if len(self._pending) + len(encoded) <= MAX_PENDING:
                    self._pending += encoded
                else:
                    self.dropped += 1
                    self._unsaid += 1
        self._lines.clear()


_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class _Gathered(logging.Handler):
    """The logging side of a :class:`StderrSink`: each record becomes a line in the same
    gathering, so ordinary lines and job lines keep their order."""

    def __init__(self, sink: StderrSink) -> None:
        super().__init__()
        self._sink = sink
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.add(record.levelname, self.format(record))
            if record.levelno >= logging.WARNING:
                self._sink.flush()  # rare, and wanted now: also outside the loop (start-up, exit)
        except Exception:
            self.handleError(record)


class _AfterFlush(logging.Handler):
    """A handler that first writes what ``sink`` has gathered, so that lines keep their order
    across two ways into the journal."""

    def __init__(self, handler: logging.Handler, sink: Sink) -> None:
        super().__init__(handler.level)
        self._handler = handler
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink.flush()
        self._handler.handle(record)


class JournalSink(Sink):
    """Straight to the journal with structured fields (python-systemd), one entry per line."""

    def __init__(self) -> None:
        from systemd.journal import JournalHandler, send

        self._send = send
        self.handlers = [JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)]

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        self._send(
            text, PRIORITY=6, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, **job_fields(job, status, elapsed_ms)
        )


def on_journal_stream(env: Mapping[str, str], fd: int) -> bool:
    """Whether ``fd`` is the journal stream systemd connected (``JOURNAL_STREAM`` names its
    device and inode, per systemd.exec(5)); not merely inherited by a shell started from a unit."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(fd)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def configure_logging(
    level: str, journal_fields: bool, env: Mapping[str, str]
) -> tuple[logging.Logger, Sink]:
    """The daemon's logger and sink. Started by systemd (stderr is its journal stream): lines
    with their priority, which journald reads, and warnings and errors as journal entries with
    their ASYNCPHP_* fields (python-systemd); with ``journal_fields``, every line such an entry.
    Otherwise: stderr lines with timestamps."""
    logger = logging.getLogger("asyncphp")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level)
    # sys.stderr is None when started with fd 2 closed: writes to it then fail quietly.
    fd = sys.stderr.fileno() if sys.stderr is not None else 2
    journald = on_journal_stream(env, fd)
    sink: Sink = StderrSink(fd, journald=journald)
    for handler in sink.handlers:
        logger.addHandler(handler)
    if not journald:
        return logger, sink
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        if journal_fields:
            logger.warning("journal_fields is on but python-systemd is not installed: lines go to stderr")
        return logger, sink
    if journal_fields:
        logger.handlers.clear()
        sink = JournalSink()
        logger.addHandler(sink.handlers[0])
        return logger, sink
    # Rare lines keep their fields (ASYNCPHP_MESSAGE_ID of a dead letter, say): as journal entries.
    sink.handlers[0].addFilter(lambda record: record.levelno < logging.WARNING)
    rare = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, level=logging.WARNING)
    logger.addHandler(_AfterFlush(rare, sink))
    return logger, sink
