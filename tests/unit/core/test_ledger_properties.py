"""The ledger's invariants over generated histories (hypothesis), against a model of what Redis
keeps for the group (its pending entries, acknowledgements and dead letters), with connections
that die before a command runs or after it ran but before its reply came back:

- nothing is acknowledged before its job ended (or it was found unrunnable);
- an entry leaves the ledger as settled only once Redis has it acknowledged or dead-lettered, or
  (its group re-created, so that nothing is pending) once its job completed: nothing it held
  vanishes, whatever an operator does to the group meanwhile;
- no entry is dead-lettered twice, nor put back through the delayed set twice (its worker asked to
  be run again later), however often its settle is sent again;
- a delivery's attempt number never goes backwards, along a lineage of entries run again at their
  worker's ask too;
- once connections hold and replies come, every settle is confirmed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from asyncphp.core.jobs import Job, Message, Outcome, Result
from asyncphp.core.ledger import (
    Ack,
    Bury,
    Claim,
    Command,
    Decision,
    Deliver,
    Later,
    Ledger,
    Policy,
    Prune,
    QueryLag,
    Read,
    Redeliver,
    Released,
    Touch,
)
from asyncphp.core.reading import Lane, Lanes
from asyncphp.wire.replies import StreamEntry

STREAM = "jobs"
MAX_ATTEMPTS = 3


@dataclass
class Group:
    """What Redis keeps for the consumer group: enough to judge the ledger's commands."""

    added: list[str] = field(default_factory=list)
    delivered: int = 0  # entries handed out by XREADGROUP so far
    pending: dict[str, int] = field(default_factory=dict)  # id → delivery count
    acked: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    others: dict[str, int] = field(default_factory=dict)  # pending for a consumer that died: id → deliveries
    later: Counter[str] = field(default_factory=Counter)  # entries put back through the delayed set
    delayed: list[tuple[int, str]] = field(default_factory=list)  # delayed jobs: (attempts so far, first id)
    lineage: dict[str, tuple[int, str]] = field(
        default_factory=dict
    )  # entry id → what its delayed job carried


@dataclass(frozen=True)
class Counted:
    """The XPENDING the stream source sends after a claim, for the claimed entries' delivery counts."""

    stream: str


class NoOrigin:
    def ended(self, job: Job, result: Result) -> None:
        pass

    def rejected(self, message: Message, reason: str) -> None:
        pass


class LedgerMachine(RuleBasedStateMachine):
    lanes: Lanes | None = None

    def __init__(self) -> None:
        super().__init__()
        self.book = Ledger(
            (STREAM,), Policy(claim_idle=10.0, max_attempts=MAX_ATTEMPTS, retry_delay=0.5), NoOrigin(),
            self.lanes,
        )  # fmt: skip
        self.redis = Group()
        self.now = 0.0
        self.outbox: list[Command] = []  # sent, not yet run by Redis
        self.inbox: list[tuple[Command, object]] = []  # run, reply not yet read
        self.running: dict[str, Job] = {}  # entry id → its job, with the dispatcher
        self.finished: set[str] = set()  # entries whose job ended, or that were unrunnable
        self.attempts: dict[str, list[int]] = {}
        self.released: set[str] = set()
        self.completed: set[str] = set()  # entries whose job completed
        self.recreated = False  # the group was destroyed and made again (XGROUP CREATE … $)

    # The world.

    @rule(count=st.integers(1, 3))
    def publish(self, count: int) -> None:
        for _ in range(count):
            self.redis.added.append(f"{len(self.redis.added) + 1}-0")

    @precondition(lambda self: self.redis.delayed)
    @rule()
    def a_delayed_job_is_due(self) -> None:
        # MOVE: the delayed job becomes a new entry, carrying its lineage.
        entry_id = f"{len(self.redis.added) + 1}-0"
        self.redis.added.append(entry_id)
        self.redis.lineage[entry_id] = self.redis.delayed.pop(0)

    @rule(seconds=st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(free=st.integers(0, 3))
    def plan(self, free: int) -> None:
        self.outbox += self.book.plan(self.now, free)

    @precondition(lambda self: self.outbox)
    @rule()
    def redis_runs_one(self) -> None:
        command = self.outbox.pop(0)
        self.inbox.append((command, self._run(command)))

    @precondition(lambda self: self.inbox)
    @rule()
    def reply_arrives(self) -> None:
        command, reply = self.inbox.pop(0)
        self._reply(command, reply)

    @rule()
    def group_recreated(self) -> None:
        # An operator's XGROUP DESTROY and CREATE … $: nothing is pending any more, only entries
        # added from now on are read. What the ledger held must still end, run or dead-lettered;
        # what was only pending in Redis (released here) is gone with the group, by that act.
        self.recreated = True
        self.released |= set(self.redis.pending) - {
            e for e in self.redis.pending if self.book.entry(STREAM, e)
        }
        self.redis.pending.clear()
        self.redis.delivered = len(self.redis.added)

    @rule(count=st.integers(1, 3))
    def another_daemon_dies_holding(self, count: int) -> None:
        # Another consumer read these and was killed: pending for it, for XAUTOCLAIM to find.
        r = self.redis
        for entry_id in r.added[r.delivered : r.delivered + count]:
            r.others[entry_id] = 1
        r.delivered = min(len(r.added), r.delivered + count)

    @rule()
    def connection_dies(self) -> None:
        # Commands not yet run are lost; those run have their replies lost.
        self.outbox.clear()
        self.inbox.clear()
        self.book.lost()

    @precondition(lambda self: self.running)
    # Weighted towards the outcomes that settle: they are what the invariants are about.
    @rule(
        data=st.data(),
        outcome=st.sampled_from([*Outcome, Outcome.REJECTED, Outcome.REJECTED, Outcome.COMPLETED]),
        recorded=st.booleans(),
    )
    def job_ends(self, data: st.DataObject, outcome: Outcome, recorded: bool) -> None:
        entry_id = data.draw(st.sampled_from(sorted(self.running)))
        job = self.running.pop(entry_id)
        self.finished.add(entry_id)
        # A failure its worker recorded as final is acknowledged, as a completed run is.
        recorded = recorded and outcome is Outcome.FAILED
        if outcome is Outcome.COMPLETED or recorded:
            self.completed.add(entry_id)
        result = Result(outcome, outcome.value, again=1.0, recorded=recorded)
        self._carry_out(self.book.ended(job, result, self.now), entry_id)

    # Redis, as the model runs the ledger's commands.

    def _run(self, command: Command) -> object:
        r = self.redis
        if isinstance(command, Ack):
            for entry_id in command.ids:
                assert entry_id in self.finished, f"{entry_id} acknowledged before its job ended"
                if r.pending.pop(entry_id, None) is not None:
                    r.acked[entry_id] += 1
            return len(command.ids)
        if isinstance(command, Bury):
            entry_id = command.entry.id
            assert entry_id in self.finished, f"{entry_id} dead-lettered before its job ended"
            # One consumer here: pending means pending for it. Pending for nobody, it is written,
            # unless a resend finds it among the dead letters already.
            if entry_id not in r.pending and command.resent and r.dead[entry_id]:
                return b"dead-id"
            r.dead[entry_id] += 1
            if r.pending.pop(entry_id, None) is not None:
                r.acked[entry_id] += 1
            return b"dead-id"
        if isinstance(command, Later):
            entry = command.entry
            assert entry.id in self.finished, f"{entry.id} put back before its job ended"
            # As scripts.LATER: no longer pending, one claimed away was settled by whoever claimed
            # it; a resend was applied by its first send if a delayed job of its next run is there.
            lineage = (command.attempts, entry.first_id or entry.id)
            if entry.id not in r.pending and (command.away or (command.resent and lineage in r.delayed)):
                return b""
            r.later[entry.id] += 1
            r.delayed.append((command.attempts, entry.first_id or entry.id))
            if r.pending.pop(entry.id, None) is not None:
                r.acked[entry.id] += 1
            return b"d1"
        if isinstance(command, Redeliver):
            entry_id = command.entry.id
            if entry_id not in r.pending:
                return []
            r.pending[entry_id] = command.entry.deliveries + 1  # RETRYCOUNT
            return [entry_id]
        if isinstance(command, Read):
            fresh = r.added[r.delivered : r.delivered + command.count]
            r.delivered += len(fresh)
            for entry_id in fresh:
                r.pending[entry_id] = 1
            return fresh
        if isinstance(command, Claim):
            # Idle entries: the dead consumer's, and ours that the ledger let go (released).
            idle = [*r.others, *(e for e in r.pending if self.book.entry(STREAM, e) is None)]
            claimed = []
            for entry_id in idle[: command.count]:
                deliveries = r.others.pop(entry_id, None) or r.pending[entry_id]
                r.pending[entry_id] = deliveries + 1
                claimed.append((entry_id, deliveries + 1))
            return claimed
        assert isinstance(command, (Touch, QueryLag, Prune))
        return None

    def _reply(self, command: Command, reply: object) -> None:
        if isinstance(command, Ack):
            for entry_id in command.ids:
                entry = self.book.entry(command.stream, entry_id)
                if entry is not None:
                    self.book.confirmed(entry)
        elif isinstance(command, Bury):
            self.book.confirmed(command.entry)
        elif isinstance(command, Later):
            self.book.confirmed(command.entry, release_guard=False)
        elif isinstance(command, Redeliver):
            present = command.entry.id in reply  # type: ignore[operator]
            self._carry_out(self.book.redelivered(command.entry, present, self.now), command.entry.id)
        elif isinstance(command, Read):
            self.book.read_done({STREAM: len(reply)})  # type: ignore[arg-type]
            for entry_id in reply:  # type: ignore[attr-defined]
                found = StreamEntry(entry_id, self._fields(entry_id) if entry_id[0] != "7" else {})
                self._carry_out(self.book.take(STREAM, found, 1, self.now), entry_id)
        elif isinstance(command, Claim):
            # As the stream source does: the XAUTOCLAIM's reply, then an XPENDING for the entries'
            # delivery counts, whose reply hands them to the ledger.
            self.book.claim_done(command.stream, "0-0", len(reply))  # type: ignore[arg-type]
            self.inbox.append((Counted(command.stream), reply))
        elif isinstance(command, Counted):
            for entry_id, deliveries in reply:  # type: ignore[attr-defined]
                self.released.discard(entry_id)
                found = StreamEntry(entry_id, self._fields(entry_id))
                self._carry_out(self.book.take(STREAM, found, deliveries, self.now), entry_id)
            self.book.claim_taken(command.stream)

    def _fields(self, entry_id: str) -> dict[bytes, bytes]:
        fields = {b"payload": b"{}"}
        if entry_id in self.redis.lineage:
            attempts, first = self.redis.lineage[entry_id]
            fields |= {b"attempts": b"%d" % attempts, b"first_id": first.encode()}
        return fields

    def _carry_out(self, decision: Decision, entry_id: str) -> None:
        if isinstance(decision, Deliver):
            m = decision.message
            fresh = Job(0, m.channel, b"", self.now, m.attempt, 0, message_id=m.message_id)
            job = decision.job or fresh
            self.finished.discard(entry_id)
            self.running[entry_id] = job
            before = self.redis.lineage.get(entry_id, (0, ""))[0]
            assert job.attempt - before <= MAX_ATTEMPTS + 1, "delivered more often than max_attempts allows"
            self.attempts.setdefault(m.first_id or entry_id, []).append(job.attempt)
        elif isinstance(decision, Released):
            self.released.add(entry_id)
        elif entry_id not in self.running:
            self.finished.add(entry_id)  # settled at once: unrunnable (no payload), or too often delivered

    # Invariants.

    @invariant()
    def let_go_only_when_acknowledged_or_released(self) -> None:
        for entry_id in self.finished - self.released:
            if self.book.entry(STREAM, entry_id) is None:
                r = self.redis
                ended = r.acked[entry_id] >= 1 or r.dead[entry_id] >= 1 or r.later[entry_id] >= 1
                ended = ended or (self.recreated and entry_id in self.completed)
                assert ended, f"{entry_id} let go without an acknowledgement, a dead letter or a run"

    @invariant()
    def never_dead_lettered_twice(self) -> None:
        assert all(count == 1 for count in self.redis.dead.values()), self.redis.dead

    @invariant()
    def never_put_back_twice(self) -> None:
        assert all(count == 1 for count in self.redis.later.values()), self.redis.later

    @invariant()
    def attempts_never_go_back(self) -> None:
        for numbers in self.attempts.values():
            assert numbers == sorted(numbers)

    def teardown(self) -> None:
        # Jobs end, connections hold, replies come: every settle gets confirmed.
        for _ in range(200):
            for entry_id, job in list(self.running.items()):
                del self.running[entry_id]
                self.finished.add(entry_id)
                self.completed.add(entry_id)
                self._carry_out(self.book.ended(job, Result(Outcome.COMPLETED), self.now), entry_id)
            self.now += 3.0
            self.plan(0)
            while self.outbox:
                self.redis_runs_one()
            while self.inbox:
                self.reply_arrives()
            if self.book.settled and not self.running:
                break
        assert self.book.settled
        self.let_go_only_when_acknowledged_or_released()
        self.never_dead_lettered_twice()
        self.never_put_back_twice()


LedgerMachine.TestCase.settings = settings(max_examples=500, stateful_step_count=80, deadline=None)
test_ledger_invariants = LedgerMachine.TestCase


LIMIT = 2


class LimitedLedgerMachine(LedgerMachine):
    """The same, for a stream with max_in_flight = 2: never more of its jobs with the dispatcher,
    whatever reads, claims, retries and lost connections do."""

    lanes = Lanes((Lane(STREAM, max_in_flight=LIMIT),))

    @invariant()
    def never_more_than_its_limit(self) -> None:
        assert len(self.running) <= LIMIT, sorted(self.running)

    @rule(free=st.integers(0, 6))
    def plan(self, free: int) -> None:
        self.outbox += self.book.plan(self.now, free)


LimitedLedgerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=80, deadline=None)
test_ledger_invariants_with_a_stream_limit = LimitedLedgerMachine.TestCase
