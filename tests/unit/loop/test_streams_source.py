"""The stream source's own bookkeeping, without a connection (none is opened here)."""

from __future__ import annotations

import logging
import math
import time

import pytest
import redis

from asyncphp.core.jobs import Counters, Job, Message, Outcome, Result
from asyncphp.core.ledger import Ack, Bury, Hold, Policy, Redeliver
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.streams import StreamSource
from asyncphp.redisurl import Target
from asyncphp.wire.replies import ReplyError, StreamEntry


def source(
    move_delayed: bool = True, delivered: list[Message] | None = None, **policy: float
) -> StreamSource:
    got = [] if delivered is None else delivered
    return StreamSource(
        Target("redis://127.0.0.1:1/0"), ("jobs",), group="g", consumer="c", policy=Policy(**policy),
        deliver=got.append, resubmit=lambda job: None, counters=Counters(), metrics=Metrics(),
        log=logging.getLogger("test"), move_delayed=move_delayed,
    )  # fmt: skip


# The source takes its time from the clock (time.monotonic()): plans are asked for well after it.
def later() -> float:
    """Past any retry delay the test sets: from now, not from when the module was imported (the
    suite runs for longer than 1,000 s, and a constant taken at import came before the retry)."""
    return time.monotonic() + 1000.0


def running(streams: StreamSource, delivered: list[Message]) -> Job:
    """An entry read and handed on, as a job the pool runs."""
    streams._carry_out(streams.ledger.take("jobs", StreamEntry("1-0", {b"payload": b'{"n": 1}'}), 1, 0.0))
    (message,) = delivered
    return Job(1, message.channel, b"n=1", 0.0, attempt=1, max_attempt=0, message_id=message.message_id)


@pytest.mark.parametrize("code", ["MOVED 3999 127.0.0.1:7002", "ASK 3999 127.0.0.1:7002", "TRYAGAIN x",
                                  "CLUSTERDOWN The cluster is down", "READONLY You can't write"])  # fmt: skip
def test_a_settle_refused_by_a_node_that_no_longer_serves_the_stream_is_sent_again_after_reconnecting(
    code: str,
) -> None:
    """Found in a fault run: an XACK answered MOVED let the entry go, so it stayed pending and ran
    again after claim_idle. It is sent again, to the stream's primary then."""
    delivered: list[Message] = []
    streams = source(delivered=delivered)
    job = running(streams, delivered)
    streams.ended(job, Result(Outcome.COMPLETED))
    (ack,) = [c for c in streams.ledger.plan(later(), 0) if isinstance(c, Ack)]
    with pytest.raises(redis.ConnectionError):
        streams._acked(ack, ReplyError(code))
    streams.ledger.lost()  # what the keeper's reconnect does (StreamSource.close)
    (again,) = [c for c in streams.ledger.plan(later() + 1, 0) if isinstance(c, Ack)]
    assert again.ids == ("1-0",)
    failed = Result(Outcome.REJECTED, "status 422", 422)
    streams = source(delivered=(delivered := []))
    streams.ended(running(streams, delivered), failed)
    (bury,) = [c for c in streams.ledger.plan(later(), 0) if isinstance(c, Bury)]
    with pytest.raises(redis.ConnectionError):
        streams._buried(bury.entry, "status 422", ReplyError(code))
    streams.ledger.lost()
    (again_bury,) = [c for c in streams.ledger.plan(later() + 1, 0) if isinstance(c, Bury)]
    assert again_bury.entry is bury.entry and again_bury.resent


def test_a_retry_refused_by_a_node_that_no_longer_serves_the_stream_is_retried_not_dead_lettered() -> None:
    """Found in a fault run: the XCLAIM of a retry answered MOVED was taken for "no longer pending",
    and the job was dead-lettered after 4 of 20 attempts."""
    delivered: list[Message] = []
    streams = source(delivered=delivered, max_attempts=20, retry_delay=0.1)
    job = running(streams, delivered)
    streams.ended(job, Result(Outcome.FAILED, "status 500", 500))
    (redeliver,) = [c for c in streams.ledger.plan(later(), 1) if isinstance(c, Redeliver)]
    with pytest.raises(redis.ConnectionError):
        streams._redelivered(redeliver.entry, ReplyError("MOVED 9842 127.0.0.1:7001"))
    assert redeliver.entry.hold is Hold.REDELIVERING
    streams.ledger.lost()
    (again,) = [c for c in streams.ledger.plan(later(), 1) if isinstance(c, Redeliver)]
    assert again.entry is redeliver.entry
    assert not [c for c in streams.ledger.plan(later(), 1) if isinstance(c, Bury)]


def test_a_stopped_source_does_not_wake_for_moves_it_will_not_send() -> None:
    streams = source()
    assert streams.wake_at(5) == -math.inf, "a move is due at once while it runs"
    streams.stop()
    assert streams.wake_at(5) == math.inf, "stopped: no move is sent, so none is waited for"


def test_without_move_delayed_nothing_is_due() -> None:
    assert source(move_delayed=False).wake_at(5) == math.inf


def test_a_release_resolves_inside_the_root_even_when_the_root_is_slash(tmp_path: object) -> None:
    from pathlib import Path

    from asyncphp.loop.releases import OutsideRoot, ReleaseFinder

    assert isinstance(tmp_path, Path)
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "worker.php").write_text("<?php")
    (tmp_path / "out").symlink_to("/etc")
    finder = ReleaseFinder(str(tmp_path / "{release}" / "worker.php"), "/")
    assert finder.locate("r1", 0.0) == str(tmp_path / "r1" / "worker.php")
    narrow = ReleaseFinder(str(tmp_path / "{release}" / "worker.php"), str(tmp_path / "r1"))
    try:
        narrow.locate("out", 0.0)
    except OutsideRoot:
        pass
    else:
        raise AssertionError("a link out of the root was followed")
