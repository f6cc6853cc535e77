"""Reading decisions: priorities, per-stream limits and rates, against a model of Redis (pure)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncphp.core.reading import (
    Give,
    Lane,
    Lanes,
    Priority,
    Rate,
    Read,
    ReadCommand,
    Reader,
    Take,
    Unblock,
)


@dataclass
class Redis:
    """Streams with a backlog each, and token buckets filled by the test's clock."""

    backlog: dict[str, int]
    rates: dict[str, Rate] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    at: dict[str, float] = field(default_factory=dict)
    read: list[tuple[str, int]] = field(default_factory=list)  # (stream, entries) in the order read
    commands: list[ReadCommand] = field(default_factory=list)

    def answer(self, reader: Reader, command: ReadCommand, now: float) -> dict[str, int] | None:
        """Carry out one command; a read's reply is returned for the caller to deliver."""
        self.commands.append(command)
        if isinstance(command, Take):
            granted, wait = self._take(command.stream, command.count, now)
            reader.taken(command.stream, granted, wait, now)
        elif isinstance(command, Give):
            self._take(command.stream, -command.count, now)
        elif isinstance(command, Read):
            got = {}
            for stream in command.streams:
                n = min(command.count, self.backlog.get(stream, 0))
                if n:
                    self.backlog[stream] -= n
                    got[stream] = n
                    self.read.append((stream, n))
            if command.block and not got:
                return None  # stays blocked
            return got
        return None

    def _take(self, stream: str, count: int, now: float) -> tuple[int, float]:
        rate = self.rates[stream]
        tokens = self.tokens.get(stream, rate.burst)
        tokens = min(rate.burst, tokens + (now - self.at.get(stream, now)) * rate.per_second)
        self.at[stream] = now
        granted = 0
        if count < 0:
            tokens = min(rate.burst, tokens - count)
        else:
            granted = min(count, math.floor(tokens))
            tokens -= granted
        self.tokens[stream] = tokens
        return granted, 0.0 if tokens >= 1 else (1 - tokens) / rate.per_second


def drive(reader: Reader, redis: Redis, readable: int, turns: int, now: float = 0.0) -> None:
    """The loop: plan, carry out, deliver replies; ``readable`` entries may be taken each turn
    (the jobs run at once)."""
    for _ in range(turns):
        for command in reader.plan(now, readable, {}):
            got = redis.answer(reader, command, now)
            if got is not None:
                reader.read_done(got)


def lanes(*streams: str, priority: Priority = Priority.NONE, **kwargs: list[int]) -> Lanes:
    weights = kwargs.get("weights") or [1] * len(streams)
    return Lanes(tuple(Lane(s, w) for s, w in zip(streams, weights, strict=True)), priority)


def test_without_priorities_limits_or_rates_one_blocking_read_over_every_stream() -> None:
    reader = Reader(Lanes.even(("a", "b")))
    assert reader.plan(0.0, 10, {}) == [Read(("a", "b"), 5, block=True)]
    assert reader.plan(0.0, 10, {}) == [], "one read out at a time"
    reader.read_done({"a": 1})
    assert reader.plan(0.0, 1, {}) == [Read(("a", "b"), 1, block=True)]
    assert Reader(Lanes.even(("a",))).plan(0.0, 0, {}) == [], "nothing read without room"


@settings(max_examples=300, deadline=None)
@given(
    backlog=st.lists(st.integers(0, 60), min_size=2, max_size=4),
    readable=st.integers(1, 20),
)
def test_strict_reads_a_stream_only_once_every_stream_above_it_is_empty(
    backlog: list[int], readable: int
) -> None:
    streams = tuple(f"s{i}" for i in range(len(backlog)))
    redis = Redis(dict(zip(streams, backlog, strict=True)))
    reader = Reader(lanes(*streams, priority=Priority.STRICT))
    drive(reader, redis, readable, turns=1000)
    assert all(n == 0 for n in redis.backlog.values()), "everything read"
    order = [stream for stream, _ in redis.read]
    # Read in order: once a stream's entries are being read, none above it has any left.
    assert order == sorted(order), order
    assert isinstance(redis.commands[-1], Read) and redis.commands[-1].block, "then it waits, blocked"


def test_strict_goes_back_to_the_top_after_each_full_read() -> None:
    reader = Reader(lanes("high", "low", priority=Priority.STRICT))
    assert reader.plan(0.0, 2, {}) == [Read(("high",), 2, block=False)]
    reader.read_done({"high": 2})  # full: high may have more
    assert reader.plan(0.0, 2, {}) == [Read(("high",), 2, block=False)], "from the top again"
    reader.read_done({"high": 1})  # short: high is empty
    assert reader.plan(0.0, 1, {}) == [Read(("low",), 1, block=False)], "the room left, to low"
    reader.read_done({"low": 1})
    assert reader.plan(0.0, 2, {}) == [Read(("high",), 2, block=False)], "a full read: high first again"
    reader.read_done({})
    assert reader.plan(0.0, 2, {}) == [Read(("low",), 2, block=False)]
    reader.read_done({})
    assert reader.plan(0.0, 2, {}) == [Read(("high", "low"), 1, block=True)], "both empty: wait on both"


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.integers(1, 8), min_size=2, max_size=4), readable=st.integers(1, 12))
def test_weighted_shares_in_proportion_while_every_stream_has_work(weights: list[int], readable: int) -> None:
    streams = tuple(f"s{i}" for i in range(len(weights)))
    redis = Redis(dict.fromkeys(streams, 10_000))
    reader = Reader(lanes(*streams, priority=Priority.WEIGHTED, weights=weights))
    drive(reader, redis, readable, turns=600)
    counts = Counter[str]()
    for stream, n in redis.read:
        counts[stream] += n
    total = sum(counts.values())
    for stream, weight in zip(streams, weights, strict=True):
        share = total * weight / sum(weights)
        assert abs(counts[stream] - share) <= readable + len(weights), (counts, weights)


def test_weighted_a_stream_that_was_empty_gains_no_credit_to_starve_the_others() -> None:
    redis = Redis({"a": 10_000, "b": 0})
    reader = Reader(lanes("a", "b", priority=Priority.WEIGHTED, weights=[1, 1]))
    drive(reader, redis, readable=1, turns=500)  # b idle for a long while
    before = len(redis.read)
    redis.backlog["b"] = 10_000
    drive(reader, redis, readable=1, turns=200)
    later = Counter(stream for stream, _ in redis.read[before:])
    assert later["a"] >= 0.4 * sum(later.values()), later


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 5),
    readable=st.integers(1, 20),
    ends=st.lists(st.integers(0, 3), min_size=1, max_size=80),
)
def test_a_stream_s_max_in_flight_is_never_exceeded(limit: int, readable: int, ends: list[int]) -> None:
    reader = Reader(Lanes((Lane("slow", max_in_flight=limit), Lane("fast")), Priority.NONE))
    backlog = {"slow": 1000, "fast": 1000}
    busy = 0
    for finished in ends:
        busy -= min(busy, finished)  # jobs of slow end
        for command in reader.plan(0.0, readable, {"slow": busy}):
            if isinstance(command, Read):
                if "slow" in command.streams:
                    assert busy + command.count <= limit, (busy, command)
                got = {s: min(command.count, backlog[s]) for s in command.streams}
                busy += got.get("slow", 0)
                reader.read_done(got)
            assert busy <= limit


def test_a_stream_at_its_limit_is_left_out_and_a_blocking_read_ends_when_it_has_room() -> None:
    reader = Reader(Lanes((Lane("slow", max_in_flight=2), Lane("fast")), Priority.NONE))
    commands = reader.plan(0.0, 5, {"slow": 2})
    assert commands == [Read(("fast",), 5, block=False)]
    reader.read_done({})
    assert reader.plan(0.0, 5, {"slow": 2}) == [Read(("fast",), 1, block=True)]
    assert reader.plan(0.0, 5, {"slow": 2}) == [], "still no room for slow"
    assert reader.plan(0.0, 5, {"slow": 1}) == [Unblock()], "a slow job ended: read slow too"
    assert reader.plan(0.0, 5, {"slow": 1}) == [], "unblocked once"
    reader.read_done({})
    assert reader.plan(0.0, 5, {"slow": 1}) == [Read(("slow",), 1, block=False)]


def test_a_rate_is_asked_of_redis_before_reading_and_unused_tokens_go_back() -> None:
    rate = Rate.parse("10/s")  # burst 1
    assert (rate.per_second, rate.burst) == (10.0, 1)
    reader = Reader(Lanes((Lane("mail", rate=Rate.parse("100/s")),), Priority.NONE))  # burst 10
    assert reader.plan(0.0, 5, {}) == [Take("mail", 5)]
    reader.taken("mail", 5, 0.0, 0.0)
    assert reader.plan(0.0, 5, {}) == [Read(("mail",), 5, block=False)]
    reader.read_done({"mail": 2})  # fewer than the tokens: three unused
    assert reader.plan(0.0, 5, {}) == [Give("mail", 2), Read(("mail",), 1, block=True)], (
        "all but one go back; the one is for the blocking read"
    )


def test_an_empty_bucket_makes_the_stream_wait_for_its_next_token_and_others_go_on() -> None:
    reader = Reader(Lanes((Lane("mail", rate=Rate.parse("2/s")), Lane("other")), Priority.NONE))
    assert reader.plan(0.0, 4, {}) == [Take("mail", 2)]
    reader.taken("mail", 0, 0.5, 0.0)
    assert reader.plan(0.0, 4, {}) == [Read(("other",), 2, block=False)]
    reader.read_done({})
    assert reader.plan(0.0, 4, {}) == [Read(("other",), 1, block=True)], "mail has no token: left out"
    assert reader.wake_at() == 0.5
    assert reader.plan(0.5, 4, {}) == [Unblock()], "its token is due: end the read to take it"
    assert reader.wake_at() == math.inf, "the read's reply comes first"
    reader.read_done({})
    assert reader.plan(0.5, 4, {}) == [Take("mail", 2)]


@settings(max_examples=100, deadline=None)
@given(per_second=st.integers(5, 200), readable=st.integers(1, 30), daemons=st.integers(1, 3))
def test_daemons_sharing_a_bucket_start_no_more_than_the_rate_allows(
    per_second: int, readable: int, daemons: int
) -> None:
    rate = Rate(per_second, 1.0)
    redis = Redis({"mail": 1_000_000}, rates={"mail": rate})
    readers = [Reader(Lanes((Lane("mail", rate=rate),), Priority.NONE)) for _ in range(daemons)]
    seconds, step = 3.0, 0.01
    now = 0.0
    while now < seconds:
        for reader in readers:
            for _ in range(10):  # the replies of a turn come back within it: plan again
                for command in reader.plan(now, readable, {}):
                    got = redis.answer(reader, command, now)
                    if got is not None:
                        reader.read_done(got)
        now += step
    read = sum(n for _, n in redis.read)
    assert read <= rate.burst + per_second * seconds + 1, read
    # And it keeps up with the rate, within one token per daemon and step granularity.
    assert read >= per_second * (seconds - 2 * step) - daemons, read


def test_rates_parse_the_ways_people_write_them() -> None:
    assert Rate.parse("100/s").per_second == 100
    assert Rate.parse("20/min").per_second == 20 / 60
    assert Rate.parse("3/10s").per_second == 0.3
    assert Rate.parse("5 / h").per_second == 5 / 3600
    for bad in ("", "100", "0/s", "5/q", "-1/s", "3/0s"):
        try:
            Rate.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def test_a_rate_reads_back_as_written() -> None:
    assert [str(Rate.parse(t)) for t in ("100/s", "20/min", "5/h", "3/10s")] == [
        "100/s",
        "20/min",
        "5/h",
        "3/10s",
    ]
