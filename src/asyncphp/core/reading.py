"""What to read next from the streams: priorities, per-stream limits, per-stream rates (pure).

With one stream, or several read alike, and no limit or rate, a read is what it always was: one
XREADGROUP over every stream, blocking, for as many entries as the pool can take (``plain``).
Otherwise reads go in rounds, one command out at a time:

    round ─▶ each stream in turn (non-blocking): its share of what the pool can take, within its
             own max_in_flight, and, with a rate, within the tokens its bucket granted (TAKE)
          ─▶ a stream that had fewer than asked is empty for this round
          ─▶ no entry from any stream: one blocking read over every stream that may be read, one
             entry each; a stream that becomes readable meanwhile (a job of a limited stream
             ended, a rate's next token is due) ends that read early (CLIENT UNBLOCK)

- ``strict``: the streams in their declared order; a stream is read only when every stream above
  it came back short this round, so no entry of a lower stream is taken while a higher one has
  any left.
- ``weighted``: each round shares what the pool can take among the streams by weight, by
  virtual time (entries read ÷ weight, the least behind served first), so that over time each
  stream gets its share whatever the others do, and a stream that had nothing to read gains no
  credit to starve the others with later.

A stream's ``max_in_flight`` counts its entries held here (queued, running, waiting to be
retried) plus those a read or claim out may bring: it can never run more.

Pure: the ledger calls :meth:`Reader.plan` with what it holds; the stream source sends the
commands and reports the replies. Nothing here touches a socket or reads a clock.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# A rate's bucket holds this many seconds of it (at least one token): the burst a quiet stream
# may start with. Small, so that "50/s" over 10 s is 500 jobs and a handful, not 550.
BURST_SECONDS = 0.1
RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|m|min|h)\s*$")


class Priority(enum.Enum):
    NONE = "none"  # every stream read alike
    STRICT = "strict"
    WEIGHTED = "weighted"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` jobs per ``seconds``, across every daemon on the same Redis."""

    count: float
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``100/s``, ``20/min``, ``5/h``, ``3/10s``."""
        match = RATE.match(text)
        if not match or float(match[1]) <= 0 or (match[2] is not None and float(match[2]) <= 0):
            raise ValueError(f"{text!r} is not a rate such as 100/s, 20/min or 3/10s")
        return cls(float(match[1]), float(match[2] or 1) * RATE_UNITS[match[3]])

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def burst(self) -> int:
        return max(1, math.ceil(self.per_second * BURST_SECONDS))

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.seconds, f"{self.seconds:g}s")
        return f"{self.count:g}/{unit}"


@dataclass(frozen=True, slots=True)
class Lane:
    """One stream, as reading sees it."""

    stream: str
    weight: int = 1
    max_in_flight: int = 0  # 0: no limit of its own
    rate: Rate | None = None


@dataclass(frozen=True, slots=True)
class Lanes:
    lanes: tuple[Lane, ...]
    priority: Priority = Priority.NONE

    @classmethod
    def even(cls, streams: tuple[str, ...]) -> Lanes:
        return cls(tuple(Lane(s) for s in streams))

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(lane.stream for lane in self.lanes)

    def only(self, streams: tuple[str, ...]) -> Lanes:
        """These lanes for ``streams`` alone (a cluster reads each slot's streams on their own)."""
        return Lanes(tuple(lane for lane in self.lanes if lane.stream in streams), self.priority)

    @property
    def plain(self) -> bool:
        """One read over every stream, as without any of this."""
        limits = any(lane.max_in_flight or lane.rate for lane in self.lanes)
        return self.priority is Priority.NONE and not limits

    @property
    def limited(self) -> bool:
        return any(lane.max_in_flight for lane in self.lanes)


@dataclass(frozen=True, slots=True)
class Read:
    streams: tuple[str, ...]
    count: int  # per stream
    block: bool


@dataclass(frozen=True, slots=True)
class Take:
    """Ask the stream's bucket for tokens (the TAKE script)."""

    stream: str
    count: int


@dataclass(frozen=True, slots=True)
class Give:
    """Tokens granted and not used (the stream had fewer entries): back to the bucket."""

    stream: str
    count: int


@dataclass(frozen=True, slots=True)
class Unblock:
    """End the blocking read out (CLIENT UNBLOCK): a stream not in it may be read now."""


ReadCommand = Read | Take | Give | Unblock


@dataclass(slots=True)
class _State:
    tokens: int = 0  # granted by the bucket, not used yet
    token_at: float = -math.inf  # none granted: the next is due then
    vtime: float = 0.0  # entries read ÷ weight (weighted)
    share: int = 0  # this round's


@dataclass
class Reader:
    lanes: Lanes
    _state: dict[str, _State] = field(default_factory=dict)
    _out: Read | Take | None = None
    _unblocked: bool = False
    _round: list[Lane] = field(default_factory=list)
    _in_round: bool = False
    _more: bool = False  # a read this round had all it asked for: its stream may have more
    _to_block: bool = False  # the round found nothing: a blocking read next, once rates have a token
    _give: dict[str, int] = field(default_factory=dict)
    _plain: bool = False

    def __post_init__(self) -> None:
        self._state = {lane.stream: _State() for lane in self.lanes.lanes}
        self._plain = self.lanes.plain

    @property
    def reading(self) -> bool:
        """A read is out: entries may still arrive for this consumer."""
        return isinstance(self._out, Read)

    def asked(self, stream: str) -> int:
        """Entries the read out may still bring from ``stream``."""
        out = self._out
        return out.count if isinstance(out, Read) and stream in out.streams else 0

    def room(self, lane: Lane, readable: int, busy: Mapping[str, int]) -> int:
        """Entries of ``lane`` that may be taken now: what the pool can take, within the lane's own
        limit (``busy``: its entries held, and those a claim out may bring)."""
        if not lane.max_in_flight:
            return readable
        return min(readable, lane.max_in_flight - busy.get(lane.stream, 0) - self.asked(lane.stream))

    # What to send.

    def plan(self, now: float, readable: int, busy: Mapping[str, int]) -> list[ReadCommand]:
        if self._plain:  # the common case, every turn of the loop: nothing else to look at
            if self._out is not None or readable <= 0:
                return []
            streams = self.lanes.streams
            self._out = Read(streams, max(1, readable // len(streams)), block=True)
            return [self._out]
        commands: list[ReadCommand] = [Give(s, n) for s, n in self._give.items()]
        self._give.clear()
        for state in self._state.values():
            if state.token_at <= now:
                state.token_at = -math.inf  # its bucket may have a token again: ask when needed
        out = self._out
        if out is not None:
            if (
                isinstance(out, Read)
                and out.block
                and not self._unblocked
                and any(lane.stream not in out.streams for lane in self._may_read(readable, busy))
            ):
                self._unblocked = True
                commands.append(Unblock())
            return commands
        if readable <= 0:
            return commands
        self._out = self._step(now, readable, busy)
        if self._out is not None:
            commands.append(self._out)
        return commands

    def _step(self, now: float, readable: int, busy: Mapping[str, int]) -> Read | Take | None:
        if self._to_block:
            return self._block(readable, busy)
        if not self._in_round:
            self._start_round(readable, busy)
        while self._round:
            lane = self._round[0]
            state = self._state[lane.stream]
            want = min(state.share, self.room(lane, readable, busy))
            if want <= 0:
                self._round.pop(0)
                continue
            if lane.rate is not None:
                if state.tokens < want and state.token_at == -math.inf:
                    return Take(lane.stream, want - state.tokens)
                if not state.tokens:
                    self._round.pop(0)  # its bucket is empty: the others go first
                    continue
                want = min(want, state.tokens)
            return Read((lane.stream,), want, block=False)
        self._in_round = False
        if self._more:
            return self._step(now, readable, busy)  # a new round, from the top
        self._to_block = True
        return self._block(readable, busy)

    def _block(self, readable: int, busy: Mapping[str, int]) -> Read | Take | None:
        """The blocking read over every stream that may be read; a rate's stream takes part only
        with a token in hand, asked for first."""
        for lane in self._may_read(readable, busy):
            if lane.rate is not None and not self._state[lane.stream].tokens:
                return Take(lane.stream, 1)
        self._to_block = False
        streams = tuple(lane.stream for lane in self._may_read(readable, busy))
        return Read(streams, 1, block=True) if streams else None

    def _start_round(self, readable: int, busy: Mapping[str, int]) -> None:
        self._in_round, self._more = True, False
        lanes = self._may_read(readable, busy)
        self._round = lanes
        if self.lanes.priority is Priority.STRICT:
            for lane in lanes:
                self._state[lane.stream].share = readable
            return
        # By virtual time: each unit to the lane least served for its weight.
        for lane in lanes:
            self._state[lane.stream].share = 0
        if not lanes:
            return
        for _ in range(readable):
            lane = min(lanes, key=lambda la: self._state[la.stream].vtime + 1 / la.weight)
            state = self._state[lane.stream]
            state.share += 1
            state.vtime += 1 / lane.weight

    def _may_read(self, readable: int, busy: Mapping[str, int]) -> list[Lane]:
        """The streams with room, whose rate (if any) has a token in hand or may have one."""
        return [
            lane
            for lane in self.lanes.lanes
            if self.room(lane, readable, busy) > 0
            and (
                lane.rate is None
                or self._state[lane.stream].tokens > 0
                or self._state[lane.stream].token_at == -math.inf
            )
        ]

    def wake_at(self) -> float:
        """When a rate's next token is due and would let a stream be read (``inf``: never)."""
        out = self._out
        if isinstance(out, Take) or (isinstance(out, Read) and (not out.block or self._unblocked)):
            return math.inf  # a reply comes first
        due = [
            s.token_at
            for lane in self.lanes.lanes
            if lane.rate is not None and not (s := self._state[lane.stream]).tokens and s.token_at > -math.inf
        ]
        return min(due, default=math.inf)

    # Replies.

    def read_done(self, got: Mapping[str, int]) -> None:
        """The read out came back with ``got`` entries per stream (nothing: it failed, or its
        block ran out)."""
        out = self._out
        if not isinstance(out, Read):
            return
        self._out, self._unblocked = None, False
        for stream in out.streams:
            state = self._state[stream]
            state.tokens = max(0, state.tokens - got.get(stream, 0))
        if out.block:
            self._in_round = False
            return
        stream = out.streams[0]
        state = self._state[stream]
        if self._round and self._round[0].stream == stream:
            lane = self._round.pop(0)
            state.share -= got.get(stream, 0)
            if got.get(stream, 0) < out.count:
                # Empty for now: its unused share is given back, but it gains no credit on the
                # others while it has nothing (else it would starve them when work comes); and
                # its tokens go back, but one, for the blocking read.
                others = [self._state[la.stream].vtime for la in self.lanes.lanes if la is not lane]
                state.vtime = max(state.vtime - state.share / lane.weight, min(others, default=-math.inf))
                if state.tokens > 1:
                    self._give[stream] = self._give.get(stream, 0) + state.tokens - 1
                    state.tokens = 1
            else:
                self._more = True  # it may have more
                if self.lanes.priority is Priority.STRICT:
                    self._in_round = False  # the next round starts from the top

    def taken(self, stream: str, granted: int, wait: float, now: float) -> None:
        """The bucket granted ``granted`` tokens; with none, the next is due in ``wait`` s."""
        if isinstance(self._out, Take):
            self._out = None
        state = self._state[stream]
        state.tokens += granted
        state.token_at = now + wait if wait > 0 else -math.inf  # none left: no more asked until then

    def lost(self) -> None:
        """The connection died: nothing is out any more (tokens in hand stay granted)."""
        self._out, self._unblocked, self._in_round, self._round = None, False, False, []
        self._to_block = False
