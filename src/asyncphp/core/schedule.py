"""When to move delayed jobs into their streams (pure).

Delayed jobs wait in Redis beside their stream (``asyncphp.wire.scripts``). Every daemon reading
a stream runs the MOVE script when the earliest due time it knows comes; the script moves what
is due, atomically, and answers with the next due time, which the daemon then sleeps until. Many
daemons may run it at the same moment: one moves the jobs, the others find nothing.

A job added due sooner than any other is announced by the script that adds it, on a channel the
daemons subscribe to (:meth:`Schedule.heard`). A refresh, MOVE again after REFRESH seconds without
one, covers what a daemon may have missed (its subscription was reconnecting); due times always
come as "in so many seconds", by Redis's clock, so a daemon's own clock may run apart.

Pure: the stream source sends the moves and reports what came back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from asyncphp.wire.scripts import MOVE_BATCH

REFRESH = 2.0  # seconds: the most a job announced while a daemon was not listening waits


@dataclass(frozen=True, slots=True)
class Move:
    stream: str


@dataclass(slots=True)
class _Stream:
    due: float = -math.inf  # the earliest due time known (monotonic); -inf: ask at once
    refresh: float = -math.inf
    out: bool = False
    heard: float = math.inf  # the earliest due time announced while a move was out


class Schedule:
    def __init__(self, streams: tuple[str, ...]) -> None:
        self._streams = {stream: _Stream() for stream in streams}

    def plan(self, now: float) -> list[Move]:
        moves = []
        for stream, state in self._streams.items():
            if not state.out and now >= min(state.due, state.refresh):
                state.out, state.heard = True, math.inf
                moves.append(Move(stream))
        return moves

    def moved(self, stream: str, count: int, next_due_in: float, now: float) -> None:
        """A MOVE came back: ``count`` jobs moved, the next due in ``next_due_in`` s (``inf``: none)."""
        state = self._streams[stream]
        state.out = False
        # A notice that came while the move was out may be of a job added after the move ran.
        state.due = min(now if count >= MOVE_BATCH else now + next_due_in, state.heard)
        state.refresh = now + REFRESH

    def heard(self, stream: str, due_in: float, now: float) -> None:
        """A job due in ``due_in`` s was added, due before any other of the stream."""
        state = self._streams.get(stream)
        if state is not None:
            state.due = min(state.due, now + due_in)
            state.heard = min(state.heard, now + due_in)

    def ask(self) -> None:
        """Move at once: notices may have been missed (their subscription was reconnecting)."""
        for state in self._streams.values():
            state.due = -math.inf

    def failed(self, stream: str, now: float) -> None:
        """A MOVE was refused (an ACL, a script error): asked again at the next refresh."""
        state = self._streams[stream]
        state.out, state.refresh = False, now + REFRESH
        state.due = state.heard

    def wake_at(self) -> float:
        return min((min(s.due, s.refresh) for s in self._streams.values() if not s.out), default=math.inf)

    def lost(self) -> None:
        for state in self._streams.values():
            state.out, state.due = False, -math.inf
