"""A job's story is told in one place: the lines' words, and no other module saying them."""

from __future__ import annotations

import logging
import re

import pytest

from asyncphp.core.jobs import Job, Outcome, Result
from asyncphp.loop.logsink import Sink
from asyncphp.loop.story import Story
from tests.conftest import ROOT


class Lines(Sink):
    def __init__(self) -> None:
        self.handlers = []
        self.jobs: list[str] = []

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        self.jobs.append(text)


def test_a_job_s_end_is_one_line_its_cheap_one_when_it_completed(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("asyncphp.test-story")
    log.setLevel(logging.INFO)
    sink = Lines()
    story = Story(log, sink)
    story.answered(Job(7, "commands", b"a=1", 0.0), Result(Outcome.COMPLETED, "", 200, b"", 0.0123))
    assert sink.jobs == ["job 7 on commands: status 200 in 12.3 ms"]
    failed = Result(Outcome.FAILED, "the worker failed", 500, b"PHP Fatal error: boom", 0.002)
    story.answered(Job(8, "commands", b"a=1", 0.0), failed)
    assert (
        'job 8 on commands: status 500 in 2.0 ms, the worker failed; stderr "PHP Fatal error: boom"'
        in caplog.text
    )
    assert len(sink.jobs) == 1
    [record] = [r for r in caplog.records if "job 8" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.ASYNCPHP_REQUEST_ID == 8  # type: ignore[attr-defined]


def test_no_other_module_tells_a_job_s_story() -> None:
    telling = re.compile(r"""["']job %d on %s|f["']job \{job\.id\}""")
    found = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "src" / "asyncphp").rglob("*.py"))
        if path.name != "story.py" and telling.search(path.read_text())
    ]
    assert not found
