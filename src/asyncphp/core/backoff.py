"""Capped exponential backoff, the retry rhythm for both the pool and Redis."""

from __future__ import annotations

from collections.abc import Callable


def _no_jitter() -> float:
    return 1.0


class Backoff:
    """Delays that double from ``first`` up to ``cap``. With ``jitter`` (a source of numbers in
    [0, 1), such as ``random.random``) each is drawn from its upper half, so that daemons that lost
    the same server do not all come back at the same instant."""

    def __init__(self, first: float, cap: float, *, jitter: Callable[[], float] | None = None) -> None:
        self.first = first
        self.cap = cap
        self._scale = _no_jitter if jitter is None else (lambda: 0.5 + jitter() / 2)
        self._current = 0.0

    def next(self) -> float:
        self._current = min(self.cap, self._current * 2 or self.first)
        return self._current * self._scale()

    def reset(self) -> None:
        self._current = 0.0
