"""A kept Redis connection's life with a fake clock: reconnect backoff, PINGs on silence, lost
when unanswered, and what is announced when it is back."""

from __future__ import annotations

import math

from asyncphp.core.link import Announce, Health, LinkState


def link() -> LinkState:
    return LinkState(jitter=lambda: 1.0)  # the upper end of each delay: easy to read


def test_connects_at_once_then_backs_off_doubling_to_the_cap_and_resets_once_ready() -> None:
    state = link()
    assert state.due(0.0)
    delays = [round(state.failed(0.0), 3) for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert not state.due(4.9) and state.due(5.0) and state.wake_at() == 5.0
    state.opened()
    assert state.up and state.wake_at() == math.inf
    assert state.ready(5.0) is Announce.FIRST
    assert round(state.failed(6.0), 3) == 0.1, "backoff reset once ready"


def test_a_connection_lost_as_soon_as_it_is_ready_keeps_backing_off() -> None:
    state = link()
    state.opened()
    state.ready(0.0)
    delays = []
    now = 0.5
    for _ in range(5):  # each time: made, ready, and refused at once (CLUSTERDOWN)
        delays.append(round(state.failed(now), 3))
        now += delays[-1]
        state.opened()
        state.ready(now)
        now += 0.01
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert round(state.failed(now + 1.0), 3) == 0.1, "up a second: the backoff starts over"


def test_announces_once_first_then_back_with_the_outage_length() -> None:
    state = link()
    state.opened()
    assert state.ready(0.0) is Announce.FIRST
    assert state.ready(0.5) is Announce.NOTHING, "said once"
    state.failed(10.0)  # lost at 10
    state.failed(10.5)  # a reconnect that failed
    state.opened()
    state.failed(11.0)  # opened, lost again before it was ready
    state.opened()
    assert state.ready(12.5) is Announce.BACK and state.outage == 2.5
    assert state.down_since == math.inf


def test_a_connection_that_never_was_ready_has_no_outage_to_report() -> None:
    state = link()
    state.opened()
    state.failed(1.0)
    assert state.down_since == math.inf
    state.opened()
    assert state.ready(2.0) is Announce.FIRST


def test_pings_a_silent_connection_and_calls_it_lost_when_the_ping_is_not_answered() -> None:
    state = link()
    state.opened()
    assert state.check(10.0, last_read=0.0, interval=15.0) is Health.FINE
    assert state.check(15.1, last_read=0.0, interval=15.0) is Health.PING
    assert state.check(20.0, last_read=0.0, interval=15.0) is Health.FINE, "waiting for the answer"
    assert state.check(30.2, last_read=0.0, interval=15.0) is Health.LOST
    state.failed(30.2)
    state.opened()
    assert state.check(31.0, last_read=31.0, interval=15.0) is Health.FINE


def test_an_answered_ping_starts_the_silence_over() -> None:
    state = link()
    state.opened()
    assert state.check(16.0, last_read=0.0, interval=15.0) is Health.PING
    assert state.check(17.0, last_read=16.5, interval=15.0) is Health.FINE
    assert state.check(31.0, last_read=16.5, interval=15.0) is Health.FINE
    assert state.check(31.6, last_read=16.5, interval=15.0) is Health.PING
