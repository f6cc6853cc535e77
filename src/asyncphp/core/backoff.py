"""Capped exponential backoff, the retry rhythm for both the pool and Redis."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``first`` up to ``cap``; with ``jitter`` each is drawn from its upper
    half, so that daemons that lost the same server do not all come back at the same instant."""

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._current = 0.0

    def next(self) -> float:
        self._current = min(self.cap, self._current * 2 or self.first)
        return self._current * random.uniform(0.5, 1.0) if self.jitter else self._current

    def reset(self) -> None:
        self._current = 0.0
