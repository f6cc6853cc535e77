"""The stream source's own bookkeeping, without a connection (none is opened here)."""

from __future__ import annotations

import logging
import math

from asyncphp.core.jobs import Counters
from asyncphp.core.ledger import Policy
from asyncphp.loop.streams import StreamSource
from asyncphp.ops.metrics import Metrics


def source(move_delayed: bool = True) -> StreamSource:
    return StreamSource(
        "redis://127.0.0.1:1/0", "", ("jobs",), group="g", consumer="c", policy=Policy(),
        deliver=lambda message: None, resubmit=lambda job: None, counters=Counters(), metrics=Metrics(),
        log=logging.getLogger("test"), move_delayed=move_delayed,
    )  # fmt: skip


def test_a_stopped_source_does_not_wake_for_moves_it_will_not_send() -> None:
    streams = source()
    assert streams.wake_at(5) == -math.inf, "a move is due at once while it runs"
    streams.stop()
    assert streams.wake_at(5) == math.inf, "stopped: no move is sent, so none is waited for"


def test_without_move_delayed_nothing_is_due() -> None:
    assert source(move_delayed=False).wake_at(5) == math.inf
