"""The log sink: job lines and ordinary lines in order, gathered into one write per turn."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncphp.core.jobs import Job
from asyncphp.loop.logsink import StderrSink, configure_logging, job_fields, on_journal_stream


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    os.close(read)
    os.close(write)


def _read(fd: int) -> str:
    try:
        return os.read(fd, 1 << 16).decode()
    except BlockingIOError:
        return ""


def _logger(sink: StderrSink, level: int = logging.INFO) -> logging.Logger:
    log = logging.getLogger(f"asyncphp-test-{id(sink)}")
    log.handlers[:] = sink.handlers
    log.propagate = False
    log.setLevel(level)
    return log


def _job(n: int) -> Job:
    return Job(n, "commands", b"a=1", 0.0)


def test_lines_wait_for_the_flush_then_go_in_one_write_in_order(pipe: tuple[int, int]) -> None:
    read, write = pipe
    sink = StderrSink(write)
    log = _logger(sink)
    log.info("Connected to redis")
    sink.job("job 1 on commands: status 200 in 1.0 ms", _job(1), 200, 1.0)
    log.info("between")
    sink.job("job 2 on commands: status 200 in 2.0 ms", _job(2), 200, 2.0)
    assert _read(read) == ""  # nothing written before the loop's flush
    sink.flush()
    text = _read(read)
    lines = text.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO Connected to redis",
        "INFO job 1 on commands: status 200 in 1.0 ms",
        "INFO between",
        "INFO job 2 on commands: status 200 in 2.0 ms",
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", line) for line in lines), lines
    sink.flush()
    assert _read(read) == ""  # each line once


def test_a_warning_is_written_at_once_after_what_came_before(pipe: tuple[int, int]) -> None:
    read, write = pipe
    sink = StderrSink(write)
    log = _logger(sink)
    sink.job("job 1 on commands: status 200 in 1.0 ms", _job(1), 200, 1.0)
    log.error("redis refused XACK")
    lines = _read(read).splitlines()
    assert [line.split(" ", 3)[2:] for line in lines] == [
        ["INFO", "job 1 on commands: status 200 in 1.0 ms"],
        ["ERROR", "redis refused XACK"],
    ]


def test_under_journald_lines_carry_their_priority_and_no_timestamp(pipe: tuple[int, int]) -> None:
    read, write = pipe
    sink = StderrSink(write, journald=True)
    log = _logger(sink, logging.DEBUG)
    log.debug("sent")
    sink.job("job 1 on commands: status 200 in 1.0 ms", _job(1), 200, 1.0)
    log.warning("slow")
    assert _read(read).splitlines() == [
        "<7>DEBUG sent",
        "<6>INFO job 1 on commands: status 200 in 1.0 ms",
        "<4>WARNING slow",
    ]


def test_bytes_that_are_not_utf8_do_not_stop_the_line(pipe: tuple[int, int]) -> None:
    read, write = pipe
    sink = StderrSink(write, journald=True)
    sink.job("job 1: stderr \udcff", _job(1), 200, 1.0)  # surrogateescape'd stderr
    sink.flush()
    assert _read(read) == "<6>INFO job 1: stderr \\udcff\n"


def test_configure_logging_picks_the_sink_from_the_environment() -> None:
    log, sink = configure_logging("INFO", False, {})
    assert isinstance(sink, StderrSink) and log.handlers == sink.handlers and not sink._journald
    log, sink = configure_logging("WARNING", False, {"JOURNAL_STREAM": "8:1234"})
    assert isinstance(sink, StderrSink) and not sink._journald, "not our stderr: not believed"
    assert not log.isEnabledFor(logging.INFO)


def test_journal_fields_of_a_job() -> None:
    job = Job(7, "jobs", b"", 0.0, message_id="1-0")
    assert job_fields(job, 200, 1.25) == {
        "ASYNCPHP_CHANNEL": "jobs", "ASYNCPHP_REQUEST_ID": 7, "ASYNCPHP_MESSAGE_ID": "1-0",
        "ASYNCPHP_STATUS": 200, "ASYNCPHP_DURATION_MS": 1.2,
    }  # fmt: skip


def test_a_full_stderr_never_holds_the_loop_lines_wait_then_are_dropped_and_said(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    read, write = pipe
    os.set_blocking(write, False)
    monkeypatch.setattr("asyncphp.loop.logsink.MAX_PENDING", 100_000)
    sink = StderrSink(write, journald=True)
    line = "x" * 1000
    for n in range(150):  # 150 kB: more than the pipe (64 kB) and the pending bytes (100 kB) hold
        sink.job(f"job {n}: {line}", _job(n), 200, 1.0)
    sink.flush()  # returns at once, with the pipe full
    assert 0 < sink.dropped < 150
    text = ""
    while chunk := _read(read):
        text += chunk
        sink.flush()  # the loop's next turns: what waited goes out
    sink.job("job 150: after", _job(150), 200, 1.0)
    sink.flush()
    text += _read(read)
    lines = text.splitlines()
    assert all(line.startswith("<") for line in lines), "whole lines only, never two run together"
    written = [line for line in lines if line.startswith("<6>INFO job")]
    assert len(written) == 150 - sink.dropped + 1
    assert lines[-2:] == [
        f"<4>WARNING {sink.dropped} log line(s) dropped: stderr was full",
        "<6>INFO job 150: after",
    ]


def test_a_traceback_under_journald_keeps_its_priority_on_every_line(pipe: tuple[int, int]) -> None:
    read, write = pipe
    sink = StderrSink(write, journald=True)
    log = _logger(sink)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("redis link failed")
    lines = _read(read).splitlines()
    assert lines[0] == "<3>ERROR redis link failed"
    assert all(line.startswith("<3>") for line in lines) and lines[-1] == "<3>RuntimeError: boom"


def test_journal_stream_is_believed_only_for_the_stream_it_names(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as f:
        stat = os.fstat(f.fileno())
        assert on_journal_stream({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, f.fileno())
        assert not on_journal_stream({"JOURNAL_STREAM": "8:1234"}, f.fileno()), "inherited by a shell"
        assert not on_journal_stream({"JOURNAL_STREAM": "garbage"}, f.fileno())
        assert not on_journal_stream({}, f.fileno())
