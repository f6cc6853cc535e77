"""The stream ledger: every entry this consumer holds, from delivery to a settle Redis confirmed.

    delivered ─▶ RUNNING ─▶ ended ─┬▶ COMPLETED ─────────────────────▶ ack ──┬▶ SETTLING ─▶ confirmed: gone
                                   ├▶ REJECTED, or out of attempts ─▶ bury ─┘
                                   ├▶ FAILED/UNDELIVERED ─▶ WAITING ─▶ due: XCLAIM counts it ─▶ RUNNING
                                   ├▶ DEFERRED (the worker asked) ─▶ later: delayed set + ack ─▶ SETTLING
                                   ├▶ FAILED and recorded by the worker ─▶ ack
                                   └▶ DROPPED/ABANDONED ─▶ released: stays pending, for XAUTOCLAIM

A settle (ack, or dead letter and ack as one script) leaves the ledger only when Redis confirms
it. One lost with its connection is sent again after the reconnect; a dead letter sent again is
not written twice (see `Bury`), and one whose entry is pending for nobody any more is written all
the same: nothing this consumer held vanishes without a dead letter or a completed run. While an
entry is held its idle time is reset (touched), so only a consumer that died has its entries
claimed by another.

Pure: the stream source (``asyncphp.loop.streams``) sends what :meth:`Ledger.plan` returns and
reports the replies. Nothing here touches a socket or reads a clock.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from asyncphp.core.jobs import Job, Message, Origin, Outcome, Result
from asyncphp.core.reading import Give, Lanes, Read, ReadCommand, Reader, Take, Unblock
from asyncphp.wire.replies import StreamEntry

__all__ = ["Give", "Read", "Take", "Unblock"]  # read commands, sent like the ledger's own

RETRY_DELAY_CAP = 300.0  # seconds
COMPLETED = Result(Outcome.COMPLETED)
# Seconds between XINFO GROUPS: the lag for STATUS=, and the group's position, recorded so that a
# group that vanishes can be made again where it was (a second of reads is what may run twice).
LAG_INTERVAL = 1.0
# Settles are gathered into few commands: sent once SETTLE_BATCH are waiting, or SETTLE_DELAY
# seconds after the first of them was decided, whichever comes first (at once when stopping or
# after a reconnect). At thousands of jobs a second that is one XACK per few dozen jobs instead of
# one per turn of the loop (13 of 81 µs of daemon CPU per job, measured). The price: a daemon
# killed with settles gathered leaves those entries pending, and they run again after claim_idle
# elsewhere: at most SETTLE_BATCH more than the jobs in flight.
SETTLE_BATCH = 32
SETTLE_DELAY = 0.002
# Consumers of the group that hold nothing and have been idle this long (at least claim_idle) are
# removed, by whichever daemon looks first: those of daemons gone without a clean leave (killed, or a
# host lost). Before Redis 7.2 a read that finds nothing leaves a consumer's idle time running, so a
# live daemon on a quiet stream may be removed too: it holds nothing, and Redis makes it again with
# the next entry delivered to it.
PRUNE_IDLE = 300.0


class Hold(enum.Enum):
    RUNNING = "running"  # with the dispatcher
    WAITING = "waiting"  # failed; tried again at ``due``
    REDELIVERING = "redelivering"  # XCLAIM sent to count the next delivery
    TO_SETTLE = "to settle"  # its settle is decided, not yet sent
    SETTLING = "settling"  # its settle is sent, not yet confirmed


class Settle(enum.Enum):
    ACK = "ack"
    BURY = "bury"  # dead letter and ack, as one script
    LATER = "later"  # back through the delayed set and ack, as one script


@dataclass(slots=True)
class Entry:
    stream: str
    id: str
    payload: bytes
    deliveries: int  # as Redis counts them, this delivery included
    touched: float
    before: int = 0  # attempts of its lineage before this entry (the worker asked for them: Later)
    first_id: str = ""  # the entry its lineage began with, when not this one
    hold: Hold = Hold.RUNNING
    due: float = 0.0  # when WAITING
    settle: Settle = Settle.ACK  # when TO_SETTLE or SETTLING
    result: Result = COMPLETED  # why, for a dead letter
    resent: bool = False  # its settle was lost with a connection, after it may have run
    job: Job | None = None  # the job again, for a retry: decoded and counted once
    due_at: str = ""  # a delayed job's due time, for the worker
    guard: str = ""  # a unique job's guard key, released once its settle is confirmed
    away: bool = False  # claimed by another consumer while held here (this daemon looked stopped)

    @property
    def attempts(self) -> int:
        """Runs of its lineage so far, this one included: ASYNCPHP_ATTEMPT."""
        return self.before + self.deliveries


# What to send. The stream source turns each into Redis commands and reports the replies.


@dataclass(frozen=True, slots=True)
class Ack:
    stream: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AckHeld:
    """Acknowledge a unique job's entry, or one a touch found claimed by another consumer, by a
    script that decides by what Redis holds, as :class:`Bury` does: pending for another consumer
    (claimed from this one while its job ran), it is left to that consumer, whose copy holds the
    guard; else it is acknowledged, and this copy releases the guard once Redis confirms. So a guard
    is released by the settle of the copy that holds it, and no second job of its key is accepted
    while a claimed copy still runs."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class Bury:
    """Dead-letter the entry and acknowledge it, as one script, which decides by what Redis holds:
    pending for this consumer, it is written; pending for another (taken over after a partition, or
    a long wait for its release), it is that consumer's to settle, and nothing is written; pending
    for nobody (its group re-created, its retry found it gone), it is written all the same, so that
    its payload is kept where an operator can replay it. A ``resent`` one (its first send was lost
    with a connection, and may have run) is not written again if the newest dead letters already
    hold it from this consumer."""

    entry: Entry
    resent: bool = False


@dataclass(frozen=True, slots=True)
class Later:
    """Put the entry back through the delayed set, due ``entry.result.again`` seconds from Redis's
    now, and acknowledge it, as one script: the worker asked to be run again then. The delayed job
    carries the lineage's attempts and its first entry's id, and a unique job's guard; the stream
    entry it becomes later is a new one. Decided by what Redis holds, as :class:`Bury`: pending for
    another consumer, it is theirs and nothing is added; a ``resent`` one no longer pending was
    applied by its first send when a delayed job of its lineage's next run is there (the add and the
    ack are one step); one ``away`` (claimed by another consumer meanwhile) no longer pending was
    settled by whoever claimed it, and a delayed copy would run it twice."""

    entry: Entry
    resent: bool = False
    away: bool = False  # claimed by another consumer meanwhile: pending for nobody, it was settled

    @property
    def attempts(self) -> int:
        """The runs the delayed job carries: this one not counted if the worker did not run it."""
        return self.entry.attempts - (1 if self.entry.result.uncounted else 0)


@dataclass(frozen=True, slots=True)
class Redeliver:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Touch:
    stream: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Claim:
    stream: str
    cursor: str
    count: int


@dataclass(frozen=True, slots=True)
class QueryLag:
    stream: str


@dataclass(frozen=True, slots=True)
class Prune:
    """Remove the group's consumers that hold nothing and were idle for ``idle`` seconds."""

    stream: str
    idle: float


@dataclass(frozen=True, slots=True)
class Unlock:
    """Release a unique job's guard, if this entry still holds it. Sent again after a lost
    connection until Redis answers, as the guard would otherwise block its key until unique_for."""

    guard: str
    id: str


Command = Ack | AckHeld | Bury | Later | Redeliver | Touch | Claim | QueryLag | Prune | Unlock | ReadCommand


# What became of an entry, for the source to carry out (and log).


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand this to the daemon: a message to decode (first delivery or claim) or a job again."""

    message: Message
    job: Job | None = None  # set for a retry: the same job, attempt raised


@dataclass(frozen=True, slots=True)
class Retrying:
    entry: Entry
    delay: float


@dataclass(frozen=True, slots=True)
class Settling:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Released:
    """No longer held here; it stays pending in Redis for XAUTOCLAIM (here or elsewhere).
    ``why`` is for a line, when nothing else says it."""

    entry: Entry
    why: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """Already held here (a claim raced with our own delivery), or not ours any more."""


Decision = Deliver | Retrying | Settling | Released | Ignored


@dataclass(frozen=True, slots=True)
class Policy:
    claim_idle: float = 60.0
    max_attempts: int = 5
    retry_delay: float = 1.0
    # Entries waiting for a retry hold no read room: the pool runs other work meanwhile, and a due
    # retry takes the next free slot before any read. This many waiting (max_queued) stops reads,
    # so that a stream of failing jobs cannot make the ledger hold without bound.
    max_waiting: int = 100_000


BUSY = frozenset({Hold.RUNNING, Hold.WAITING, Hold.REDELIVERING})  # what a stream's max_in_flight counts


class Ledger:
    def __init__(
        self, streams: tuple[str, ...], policy: Policy, origin: Origin, lanes: Lanes | None = None
    ) -> None:
        self.streams = streams
        self.policy = policy
        self.reader = Reader(lanes or Lanes.even(streams))
        self._limited = self.reader.lanes.limited  # a stream has its own max_in_flight: count what it holds
        self._origin = origin  # what jobs made from these entries report their end to
        self._held: dict[tuple[str, str], Entry] = {}
        # Kept apart as well, so that plan(), called every turn of the loop, scans nothing: the
        # entries whose settle is to be sent, and those waiting for a retry.
        self._to_settle: list[Entry] = []
        self._settle_due = math.inf  # when the gathered settles go out (see SETTLE_BATCH)
        self._waiting: list[tuple[float, int, Entry]] = []  # a heap by due time
        self._order = itertools.count()  # ties in due time go in the order they failed
        self._to_unlock: list[Unlock] = []  # guards to release, not yet sent
        self._unlocking: set[Unlock] = set()  # sent, not yet answered
        self.last_read: dict[str, str] = {}  # the newest id delivered to us per stream, for a lost group
        self._claim_from: dict[str, str] = {}
        self._claiming: dict[str, int] = {}  # stream → entries its claim out may bring
        self.stopped = False
        self._next_touch = 0.0
        self._next_claim = 0.0
        self._next_lag = 0.0
        self._next_prune = 0.0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def unsettled(self) -> int:
        """Settles waiting to be sent or confirmed, and the guards they release."""
        settles = sum(1 for e in self._held.values() if e.hold in (Hold.TO_SETTLE, Hold.SETTLING))
        return settles + len(self._to_unlock) + len(self._unlocking)

    @property
    def settled(self) -> bool:
        return not self.unsettled

    def entry(self, stream: str, entry_id: str) -> Entry | None:
        return self._held.get((stream, entry_id))

    @property
    def reading(self) -> bool:
        """An XREADGROUP is out: entries may still arrive for this consumer."""
        return self.reader.reading

    def busy(self) -> dict[str, int]:
        """Per stream: entries held and not ended (queued, running, waiting for a retry), and
        those a claim out may bring; what a stream's max_in_flight counts."""
        counts = dict(self._claiming)
        for entry in self._held.values():
            if entry.hold in BUSY:
                counts[entry.stream] = counts.get(entry.stream, 0) + 1
        return counts

    # Entries in.

    def take(self, stream: str, found: StreamEntry, deliveries: int, now: float) -> Decision:
        """An entry delivered to this consumer (by XREADGROUP or a claim)."""
        key = (stream, found.id)
        if key in self._held:
            return Ignored()
        if _newer(found.id, self.last_read.get(stream, "0-0")):
            self.last_read[stream] = found.id
        fields = found.fields
        payload = fields.get(b"payload")
        entry = Entry(stream, found.id, payload or b"", deliveries, now)
        if b"due_at" in fields:
            entry.due_at = fields[b"due_at"].decode(errors="replace")
        if b"unique" in fields:
            entry.guard = fields[b"unique"].decode(errors="replace")
        if b"attempts" in fields:  # run again at its worker's ask (Later): its lineage goes on
            before = fields[b"attempts"]
            entry.before = int(before) if before.isdigit() else 0
            entry.first_id = fields.get(b"first_id", b"").decode(errors="replace")
        self._held[key] = entry
        if payload is None:
            reason = "the entry has no payload field"
            return self._settle(entry, Settle.BURY, Result(Outcome.REJECTED, reason), now)
        if deliveries > self.policy.max_attempts:
            # Delivered more often than allowed without ever being settled: it may be what
            # killed the daemons that had it.
            reason = f"delivered {deliveries} times without an outcome (a daemon may have died on it)"
            return self._settle(entry, Settle.BURY, Result(Outcome.FAILED, reason), now)
        return Deliver(self._message(entry))

    def rejected(self, stream: str, entry_id: str, reason: str, now: float) -> Decision:
        """The message could not become a job: dead-letter it."""
        entry = self._held.get((stream, entry_id))
        if entry is None or entry.hold is not Hold.RUNNING:
            return Ignored()
        return self._settle(entry, Settle.BURY, Result(Outcome.REJECTED, f"bad message: {reason}"), now)

    # Entries out.

    def ended(self, job: Job, result: Result, now: float) -> Decision:
        """The job made from an entry ended: acknowledge, dead-letter, retry later, or release."""
        entry = self._held.get((job.channel, job.message_id))
        if entry is None or entry.hold is not Hold.RUNNING:
            return Ignored()
        outcome = result.outcome
        if outcome is Outcome.COMPLETED or result.recorded:
            return self._settle(entry, Settle.ACK, result, now)
        if outcome is Outcome.REJECTED:
            return self._settle(entry, Settle.BURY, result, now)
        if outcome is Outcome.DEFERRED:
            # The worker's ask, honoured whatever max_attempts (which bounds the daemon's own
            # retries): the worker counts its own, by ASYNCPHP_ATTEMPT. While stopping too: it is
            # a settle, and leaves nothing for another consumer to claim.
            return self._settle(entry, Settle.LATER, result, now)
        if outcome in (Outcome.FAILED, Outcome.UNDELIVERED) and not self.stopped:
            # The daemon's own budget counts this entry's deliveries: a worker's Retry-In starts
            # it afresh (the worker chose to run it again, and counts its lineage's attempts
            # itself), so that a job released a hundred times is not buried at its first crash.
            if entry.deliveries >= self.policy.max_attempts:
                return self._settle(entry, Settle.BURY, result, now)
            delay = min(RETRY_DELAY_CAP, self.policy.retry_delay * 2 ** (entry.deliveries - 1))
            entry.hold, entry.due, entry.job, entry.result = Hold.WAITING, now + delay, job, result
            self._wait(entry)
            return Retrying(entry, delay)
        # DROPPED or ABANDONED, or a failure while stopping: another consumer takes it over.
        del self._held[(entry.stream, entry.id)]
        return Released(entry)

    def _settle(self, entry: Entry, settle: Settle, result: Result, now: float) -> Decision:
        entry.hold, entry.settle, entry.result, entry.job = Hold.TO_SETTLE, settle, result, None
        self._to_settle.append(entry)
        if len(self._to_settle) >= SETTLE_BATCH:
            self._settle_due = -math.inf
        elif self._settle_due == math.inf:
            self._settle_due = now + SETTLE_DELAY
        return Settling(entry)

    # Replies.

    def confirmed(self, entry: Entry, release_guard: bool = True) -> None:
        """Redis confirmed the entry's settle: it is no longer ours to care about. A unique job's
        guard is released now (by the next plan), not before: a job still pending may run again;
        not at all when ``release_guard`` is false (another consumer's copy holds the entry, and
        its guard goes with that copy)."""
        if self._held.get((entry.stream, entry.id)) is entry and entry.hold is Hold.SETTLING:
            del self._held[(entry.stream, entry.id)]
            if entry.guard and release_guard:
                self._to_unlock.append(Unlock(entry.guard, entry.id))

    def claimed_away(self, stream: str, ids: list[str]) -> None:
        """A touch found these entries pending for another consumer: their jobs may still run here,
        but the entries are that consumer's now. They are touched no more, and their settle is left
        to whoever holds them (:class:`AckHeld`, :class:`Bury`)."""
        for entry_id in ids:
            entry = self._held.get((stream, entry_id))
            if entry is not None:
                entry.away = True

    def unlocked(self, unlock: Unlock) -> None:
        """Redis answered a guard's release (released, held by another job, or refused)."""
        self._unlocking.discard(unlock)

    def refused(self, entry: Entry) -> None:
        """Redis refused the settle (no room, wrong key type, an ACL): the entry stays pending, to
        be claimed and settled again later, here or elsewhere."""
        if self._held.get((entry.stream, entry.id)) is entry:
            del self._held[(entry.stream, entry.id)]

    def redelivered(self, entry: Entry, present: bool, now: float) -> Decision:
        """The XCLAIM counting a retry's delivery came back; ``present``: still pending for us."""
        if self._held.get((entry.stream, entry.id)) is not entry or entry.hold is not Hold.REDELIVERING:
            return Ignored()
        job = entry.job
        if self.stopped or job is None:
            del self._held[(entry.stream, entry.id)]
            return Released(entry, "stopping before its retry")
        if not present:
            # Its group was re-created, or another consumer took it over: nobody would retry
            # it. Its payload is here: keep it where an operator can replay it.
            failed = entry.result
            reason = (
                "no longer pending for this consumer when its retry was due (its group re-created, or "
                f"taken over); it had failed: {failed.reason or failed.outcome.value}"
            )
            buried = Result(failed.outcome, reason, failed.status, failed.stderr)
            return self._settle(entry, Settle.BURY, buried, now)
        entry.deliveries += 1
        entry.hold, entry.touched, entry.job = Hold.RUNNING, now, None
        job.attempt = entry.attempts
        job.received, job.last_error, job.counted = now, "", False
        return Deliver(self._message(entry), job)

    def read_done(self, got: Mapping[str, int]) -> None:
        """The read out came back with ``got`` entries per stream (none: failed, or timed out)."""
        self.reader.read_done(got)

    def claim_done(self, stream: str, cursor: str, brought: int = 0) -> None:
        """An XAUTOCLAIM came back: follow its scan next turn until it wraps to 0-0. The
        ``brought`` entries it claimed are taken only once their delivery counts are known (an
        XPENDING later): until :meth:`claim_taken`, they count against the stream's max_in_flight
        as they did while the claim was out, and no other claim is sent."""
        if brought > 0:
            self._claiming[stream] = brought
        else:
            self._claiming.pop(stream, None)
        self._claim_from[stream] = cursor
        if cursor != "0-0":
            self._next_claim = 0.0

    def claim_taken(self, stream: str) -> None:
        """The entries a claim brought were taken (or the daemon stops): they count as held now."""
        self._claiming.pop(stream, None)

    def lost(self) -> None:
        """The connection died: whatever was sent and not confirmed is sent again once back."""
        self.reader.lost()
        self._claiming.clear()
        for entry in self._held.values():
            if entry.hold is Hold.SETTLING:
                entry.hold, entry.resent = Hold.TO_SETTLE, True
                self._to_settle.append(entry)
                self._settle_due = -math.inf
            elif entry.hold is Hold.REDELIVERING:
                entry.hold, entry.due = Hold.WAITING, 0.0
                self._wait(entry)
            entry.touched = -math.inf  # touch at once: the outage may have made it look idle
        self._to_unlock += self._unlocking  # a release of a guard only ever releases its own job's
        self._unlocking.clear()
        self._next_touch = self._next_claim = 0.0

    def stop(self) -> list[Entry]:
        """Stop taking entries; those waiting for a retry are released (another consumer takes
        them over, their next delivery counted). Running ones end through :meth:`ended`."""
        self.stopped = True
        waiting = [e for e in self._held.values() if e.hold in (Hold.WAITING, Hold.REDELIVERING)]
        self._waiting.clear()
        for entry in waiting:
            del self._held[(entry.stream, entry.id)]
        return waiting

    # What to send.

    def plan(self, now: float, free: int) -> list[Command]:
        """Everything due now, settles first; ``free`` more entries may be taken (free request
        slots, and read-ahead: Admission.readable)."""
        commands: list[Command] = []
        if self._to_settle and (now >= self._settle_due or self.stopped):
            self._settle_due = math.inf
            acks: dict[str, list[str]] = {}
            for entry in self._to_settle:
                if entry.hold is not Hold.TO_SETTLE or self._held.get((entry.stream, entry.id)) is not entry:
                    continue  # listed twice, or let go meanwhile
                entry.hold = Hold.SETTLING
                if entry.settle is Settle.ACK and (entry.guard or entry.away):
                    commands.append(AckHeld(entry))
                elif entry.settle is Settle.ACK:
                    acks.setdefault(entry.stream, []).append(entry.id)
                elif entry.settle is Settle.LATER:
                    commands.append(Later(entry, entry.resent, entry.away))
                else:
                    commands.append(Bury(entry, entry.resent))
            self._to_settle.clear()
            commands += [Ack(stream, tuple(ids)) for stream, ids in acks.items()]
        if self._to_unlock:
            commands += self._to_unlock
            self._unlocking.update(self._to_unlock)
            self._to_unlock.clear()
        if self.stopped:
            return commands
        if self._waiting:
            while self._waiting and self._waiting[0][0] <= now and free > 0:
                entry = heapq.heappop(self._waiting)[2]
                entry.hold = Hold.REDELIVERING
                commands.append(Redeliver(entry))
                free -= 1
            if len(self._waiting) >= self.policy.max_waiting:
                free = 0
        if now >= self._next_touch:
            self._next_touch = now + self.policy.claim_idle / 4
            commands += self._touch(now)
        busy = self.busy() if self._limited else {}
        if not self._claiming and now >= self._next_claim and free > 0:
            self._next_claim = now + self.policy.claim_idle / 2
            share = max(1, free // len(self.streams))
            for lane in self.reader.lanes.lanes:
                count = min(share, self.reader.room(lane, free, busy))
                if count > 0:
                    self._claiming[lane.stream] = count
                    commands.append(Claim(lane.stream, self._claim_from.get(lane.stream, "0-0"), count))
            busy = self.busy() if self._limited else {}
        if now >= self._next_lag:
            self._next_lag = now + LAG_INTERVAL
            commands += [QueryLag(stream) for stream in self.streams]
        if now >= self._next_prune:
            idle = max(PRUNE_IDLE, self.policy.claim_idle)
            self._next_prune = now + idle / 2
            commands += [Prune(stream, idle) for stream in self.streams]
        commands += self.reader.plan(now, free, busy)
        return commands

    def wake_at(self, free: int) -> float:
        """When :meth:`plan` has work due that no reply brings (``inf``: none)."""
        settles = self._settle_due if self._to_settle else math.inf
        if self._to_unlock or (self.stopped and self._to_settle):
            return -math.inf
        if self.stopped:
            return settles
        wakes = [settles, self.reader.wake_at() if free > 0 else math.inf]
        if self._waiting and free > 0:
            wakes.append(self._waiting[0][0])
        return min(wakes)

    def _wait(self, entry: Entry) -> None:
        heapq.heappush(self._waiting, (entry.due, next(self._order), entry))

    def _touch(self, now: float) -> list[Command]:
        """Reset the idle time of entries held here for a while, so nobody claims them from us."""
        by_stream: dict[str, list[str]] = {}
        for entry in self._held.values():
            if not entry.away and now - entry.touched > self.policy.claim_idle / 4:
                entry.touched = now
                by_stream.setdefault(entry.stream, []).append(entry.id)
        return [Touch(stream, tuple(ids)) for stream, ids in by_stream.items()]

    def _message(self, entry: Entry) -> Message:
        # No retries by the dispatcher itself: a failed delivery comes back here, to wait and be
        # counted by Redis.
        return Message(
            entry.stream, entry.payload, self._origin, entry.id, entry.attempts, retry_here=False,
            due_at=entry.due_at, first_id=entry.first_id,
        )  # fmt: skip


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _newer(a: str, b: str) -> bool:
    return id_key(a) > id_key(b)
