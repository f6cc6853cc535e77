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
