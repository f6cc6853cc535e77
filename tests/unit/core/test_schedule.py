"""When delayed jobs are moved (pure, with a fake clock)."""

from __future__ import annotations

import math

from asyncphp.core.schedule import REFRESH, Move, Schedule
from asyncphp.wire.scripts import MOVE_BATCH


def test_a_move_at_once_then_at_the_earliest_due_time_redis_names() -> None:
    schedule = Schedule(("a", "b"))
    assert schedule.plan(100.0) == [Move("a"), Move("b")], "at start: what is due already"
    assert schedule.plan(100.0) == [], "one move out per stream"
    schedule.moved("a", 3, 0.2, 100.0)
    schedule.moved("b", 0, math.inf, 100.0)  # nothing waits in b
    assert schedule.wake_at() == 100.2
    assert schedule.plan(100.1) == []
    assert schedule.plan(100.2) == [Move("a")]
    schedule.moved("a", 1, math.inf, 100.2)
    assert schedule.wake_at() == 100.0 + REFRESH, "b's refresh: a job added sooner is learnt then"


def test_a_full_batch_is_followed_by_another_move_at_once() -> None:
    schedule = Schedule(("a",))
    schedule.plan(0.0)
    schedule.moved("a", MOVE_BATCH, 0.0, 0.0)
    assert schedule.plan(0.0) == [Move("a")]


def test_a_refused_move_is_asked_again_at_the_refresh_and_a_reconnect_asks_at_once() -> None:
    schedule = Schedule(("a",))
    schedule.plan(0.0)
    schedule.failed("a", 0.0)
    assert schedule.plan(REFRESH / 2) == []
    assert schedule.plan(REFRESH) == [Move("a")]
    schedule.lost()  # the move out was lost with its connection
    assert schedule.plan(REFRESH) == [Move("a")]


def test_off_means_nothing_to_do() -> None:
    schedule = Schedule(())
    assert schedule.plan(0.0) == []
    assert schedule.wake_at() == math.inf


def test_a_job_announced_due_sooner_wakes_the_daemon_then() -> None:
    schedule = Schedule(("a",))
    schedule.plan(0.0)
    schedule.moved("a", 0, math.inf, 0.0)  # nothing waits
    assert schedule.wake_at() == REFRESH
    schedule.heard("a", 0.1, 0.05)
    assert abs(schedule.wake_at() - 0.15) < 1e-9
    schedule.heard("a", 5.0, 0.05)
    assert abs(schedule.wake_at() - 0.15) < 1e-9, "a later one changes nothing"
    schedule.heard("other", 0.0, 0.05)  # a stream this daemon does not read
    assert schedule.plan(0.1) == []
    assert schedule.plan(0.2) == [Move("a")]


def test_a_notice_heard_while_a_move_is_out_is_not_lost_to_its_reply() -> None:
    schedule = Schedule(("a",))
    schedule.plan(0.0)  # a move out: Redis ran it before the new job was added
    schedule.heard("a", 0.1, 0.01)  # the new job's notice comes before the move's reply
    schedule.moved("a", 0, math.inf, 0.02)  # "nothing waits", as it was when the move ran
    assert abs(schedule.wake_at() - 0.11) < 1e-9


def test_a_reconnected_subscription_moves_at_once() -> None:
    schedule = Schedule(("a",))
    schedule.plan(0.0)
    schedule.moved("a", 0, 60.0, 0.0)
    schedule.ask()
    assert schedule.plan(0.1) == [Move("a")]
