"""Where the daemon's log lines go, and the cheap path for the one line each finished job gets.

Every job that ends well gets one INFO line; at thousands of jobs a second, Python's logging
machinery (a record, a formatter, a lock and a write per line) cost more than the job itself.
So that line skips it: on stderr, lines (the job lines and every other one, in order) are
gathered and written once per turn of the event loop, just before it waits again; under
systemd, each job line goes to the journal directly, as one datagram with its fields. Anything
rarer than a finished job (warnings, errors, a start-up line) takes the ordinary logging path,
which ends in the same place.
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
STALL_SECONDS = 1.0  # the longest a full stderr may hold the loop, per flush


def job_fields(job: Job, status: int = 0, elapsed_ms: float = -1.0) -> dict[str, object]:
    """Structured journal fields for a job's log line (a stderr sink has no use for them)."""
    fields: dict[str, object] = {"ASYNCPHP_CHANNEL": job.channel, "ASYNCPHP_REQUEST_ID": job.id}
    if job.message_id:
        fields["ASYNCPHP_MESSAGE_ID"] = job.message_id
    if status:
        fields["ASYNCPHP_STATUS"] = status
    if elapsed_ms >= 0:
        fields["ASYNCPHP_DURATION_MS"] = round(elapsed_ms, 1)
    return fields


class Sink:
    """Where lines end: :meth:`job` for a finished job's INFO line, a :class:`logging.Handler`
    for every other line, and :meth:`flush` once per turn of the loop."""

    handler: logging.Handler

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write what was gathered (the loop calls this before it waits)."""


class StderrSink(Sink):
    """Lines on stderr, written together: one ``write`` per turn of the loop. With ``journald``
    (stderr is a journal stream) a line starts with its syslog priority, ``<6>``, which journald
    takes as the entry's PRIORITY, and no timestamp, which it adds itself."""

    def __init__(self, fd: int = 2, journald: bool = False) -> None:
        self._fd = fd
        self._journald = journald
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        self.dropped = 0  # lines let go because stderr stayed full (see flush)
        self._unsaid = 0  # of those, not yet said in a line
        self.handler = _Gathered(self)

    def add(self, level: str, text: str) -> None:
        if self._journald:
            self._lines.append(f"<{_PRIORITY.get(level, 6)}>{level} {text}\n")
        else:
            now = time.time()
            second = int(now)
            if second != self._second:  # strftime once a second, not once a line
                self._second = second
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._lines.append(f"{self._stamp},{int((now - second) * 1000):03d} {level} {text}\n")

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        self.add("INFO", text)

    def flush(self) -> None:
        if not self._lines:
            return
        if self._unsaid:
            lost, self._unsaid = self._unsaid, 0
            self.add("WARNING", f"{lost} log line(s) dropped: stderr stayed full for {STALL_SECONDS:g} s")
            self._lines.insert(0, self._lines.pop())  # before the lines that came after the loss
        data = memoryview("".join(self._lines).encode("utf-8", "backslashreplace"))
        self._lines.clear()
        while data:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                # A non-blocking stderr whose reader has stopped reading: wait a bounded time,
                # then let these lines go rather than stall the loop (or spin) behind it.
                if not select.select([], [self._fd], [], STALL_SECONDS)[1]:
                    lost = data.tobytes().count(b"\n")
                    self.dropped += lost
                    self._unsaid += lost
                    return
                continue
            except OSError:
                return  # stderr is gone (closed, EPIPE): there is nowhere to say so
            data = data[written:]


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


class JournalSink(Sink):
    """Straight to the journal with structured fields (python-systemd), one entry per line."""

    def __init__(self) -> None:
        from systemd.journal import JournalHandler, send

        self._send = send
        self.handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        self._send(
            text, PRIORITY=6, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER, **job_fields(job, status, elapsed_ms)
        )


def configure_logging(
    level: str, journal_fields: bool, env: Mapping[str, str]
) -> tuple[logging.Logger, Sink]:
    """The daemon's logger and sink. Started by systemd (``JOURNAL_STREAM`` is set): stderr lines
    with their priority, which journald reads; with ``journal_fields``, journal entries with
    structured fields instead (python-systemd). Otherwise: stderr lines with timestamps."""
    logger = logging.getLogger("asyncphp")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level)
    sink: Sink = StderrSink(sys.stderr.fileno(), journald=bool(env.get("JOURNAL_STREAM")))
    missing = ""
    if env.get("JOURNAL_STREAM") and journal_fields:
        try:
            sink = JournalSink()
        except ImportError:
            missing = "journal_fields is on but python-systemd is not installed: job lines go to stderr"
    logger.addHandler(sink.handler)
    if missing:
        logger.warning("%s", missing)
    return logger, sink
