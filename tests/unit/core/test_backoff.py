from __future__ import annotations

import random

from asyncphp.core.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.1


def test_jitter_stays_in_the_upper_half() -> None:
    backoff = Backoff(1.0, 8.0, jitter=random.Random(7).random)
    for ceiling in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert ceiling / 2 <= backoff.next() <= ceiling


def test_jitter_extremes() -> None:
    assert Backoff(2.0, 8.0, jitter=lambda: 0.0).next() == 1.0
    assert Backoff(2.0, 8.0, jitter=lambda: 0.999).next() < 2.0
