"""The durable source: Redis Streams read through a consumer group, acknowledged on the worker's result.

    XREADGROUP (free request slots, and a pool's width queued behind them) ─▶ job ─▶ pool ─▶ result
        2xx/3xx → XACK · 4xx or a bad message → dead letter + XACK, as one script
        5xx, fatal error, pool unreachable → again after a growing delay, up to max_attempts, then
        dead letter · still running at shutdown → left pending for another consumer
        the worker's ask (docs/contract.md): run again in N s → delayed set + XACK, as one script ·
        a dead letter now · failed and recorded by the worker → XACK

What to do with each entry is decided by the ledger (``asyncphp.core.ledger``); this module sends
its commands and reports the replies. Two connections, both driven by the event loop
(``redislink``): one blocks in XREADGROUP, the other carries settles, claims and lag queries, in
order.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable

import redis

from asyncphp.core.jobs import Counters, Job, Message, Result
from asyncphp.core.ledger import (
    Ack,
    AckHeld,
    Bury,
    Claim,
    Command,
    Decision,
    Deliver,
    Entry,
    Later,
    Ledger,
    Policy,
    Prune,
    QueryLag,
    Redeliver,
    Released,
    Retrying,
    Touch,
    Unlock,
    id_key,
)
from asyncphp.core.reading import Give, Lanes, Rate, Read, Take, Unblock
from asyncphp.core.schedule import Move, Schedule
from asyncphp.logfmt import preview
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.redislink import ELSEWHERE, Link, Reply
from asyncphp.redisurl import Target
from asyncphp.wire import replies, scripts
from asyncphp.wire.keys import Keys, stream_of_notices
from asyncphp.wire.replies import ReplyError

# Error codes after which the connection is made again: the server cannot take writes now, or
# (a cluster) serves the stream's slot no more.
RECONNECT_ON = frozenset({"READONLY", "LOADING", "MASTERDOWN", "BUSY"}) | ELSEWHERE
DEAD_MAXLEN = 100_000  # dead letters kept per stream (approximately)
BLOCK_MS = 2000  # XREADGROUP waits this long for entries, then is sent again
UNBLOCKLESS_BLOCK_MS = 100  # the same, by priority or limits, where CLIENT UNBLOCK is refused
STDERR_EXCERPT = 2000  # bytes of the worker's stderr kept in a dead letter


class StreamSource:
    def __init__(
        self,
        target: Target,
        streams: tuple[str, ...],
        *,
        group: str,
        consumer: str,
        policy: Policy,
        deliver: Callable[[Message], None],
        resubmit: Callable[[Job], None],
        counters: Counters,
        metrics: Metrics,
        log: logging.Logger,
        lanes: Lanes | None = None,
        move_delayed: bool = True,
    ) -> None:
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.what = f"stream {', '.join(streams)} (group {group}, consumer {consumer})"
        self.announce = True
        self.ledger = Ledger(streams, policy, self, lanes)
        self.lanes = self.ledger.reader.lanes
        self.schedule = Schedule(streams if move_delayed else ())
        self._deliver = deliver
        self._resubmit = resubmit
        self._counters = counters
        self._metrics = metrics
        self._log = log
        # On a cluster, the streams share a slot (see asyncphp.settings): both links go to its primary.
        self.reader = Link(target, route=streams[0])
        self.writer = Link(target, route=streams[0])
        self._read_sent = math.inf  # when the XREADGROUP now out was sent
        self._reader_id = 0  # CLIENT ID of the reader, to unblock its read when stopping
        self._opened = False  # before the first open, a missing group is new, not vanished
        # The group's last delivered id, per XINFO GROUPS, and as recorded in <stream>:groups.
        self._delivered: dict[str, str] = {}
        self._recorded: dict[str, str] = {}
        self._unrecordable = False  # an ACL refused <stream>:groups: said once
        self._refusals: set[str] = set()  # commands sent again and again whose refusal was said
        self._unblock_said = False
        self.lag: dict[str, int] = {}

    # Connection.

    def open(self) -> tuple[str, str]:
        """Connect both links and make sure every stream and its group exist.

        Raises:
            redis.RedisError, OSError: Redis is unreachable or refused us.
        """
        where = self.reader.open()
        if self.reader.version and self.reader.version < (6, 2):
            raise redis.RedisError(
                f"the durable mode needs Redis 6.2 or later (XAUTOCLAIM); this is {where[1]}"
            )
        self.writer.open()
        try:
            self._reader_id = int(self.reader.call("CLIENT", "ID"))
            self.writer.call("CLIENT", "UNBLOCK", 0)  # no such client: it only asks whether we may
        except redis.ResponseError as exc:
            self._no_unblock(exc)
        for stream in self.streams:
            try:
                recorded = self.writer.call("HGET", Keys(stream).groups, self.group)
            except redis.ResponseError:
                recorded = None  # an ACL without the key: the position is what this daemon knows
            if recorded:
                self._recorded[stream] = recorded.decode()
            start = self._start(stream)
            try:
                self.writer.call("XGROUP", "CREATE", stream, self.group, start, "MKSTREAM")
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            else:
                self._group_created(stream, start)
        self.reader.start()
        self.writer.start()
        self._opened = True
        self.ledger.lost()  # anything sent before and unconfirmed goes again
        self.schedule.lost()
        self._read_sent = math.inf
        return where

    def _start(self, stream: str) -> str:
        """Where to create the group: the newest entry known to be delivered to it (by this
        daemon, by any per XINFO GROUPS, or as recorded in <stream>:groups), so that a group that
        vanished (deleted, or Redis restarted without persistence) does not make the stream run
        again; else the start, so that entries added while no daemon ever read the stream are
        work too."""
        sources = (self.ledger.last_read, self._delivered, self._recorded)
        known = [position for source in sources if (position := source.get(stream))]
        return max(known, key=id_key) if known else "0"

    def _group_created(self, stream: str, start: str) -> None:
        if not self._opened and start == "0":
            self._log.info("created consumer group %s of stream %s at its start", self.group, stream)
            return
        where = "its start: every entry it retains runs again" if start == "0" else (
            f"{start}, the last entry delivered to it, so that nothing before it runs again"
        )  # fmt: skip
        self._log.error(
            "consumer group %s of stream %s was missing (deleted, or redis restarted without persistence): "
            "re-created at %s; entries pending in the old group are no longer tracked",
            self.group, stream, where,
        )  # fmt: skip

    def _recreate_groups(self) -> None:
        for stream in self.streams:
            start = self._start(stream)

            def created(reply: Reply, stream: str = stream, start: str = start) -> None:
                if not isinstance(reply, ReplyError):
                    self._group_created(stream, start)
                elif reply.code != "BUSYGROUP":
                    raise redis.ConnectionError(f"XGROUP CREATE refused: {reply}")

            self.writer.send("XGROUP", "CREATE", stream, self.group, start, "MKSTREAM", on_reply=created)

    @property
    def ready(self) -> bool:
        """Groups exist once :meth:`open` has returned."""
        return True

    def watch(self) -> list[tuple[int, Callable[[], None]]]:
        return [(self.reader.fileno(), self.reader.drain), (self.writer.fileno(), self.writer.drain)]

    @property
    def last_read(self) -> float:
        # A read out for longer than BLOCK_MS has gone unanswered: the reader's connection is
        # dead even if the writer's replies keep coming.
        if time.monotonic() - self._read_sent > BLOCK_MS / 1000 + 1:
            return min(self.reader.last_read, self._read_sent)
        return max(self.reader.last_read, self.writer.last_read)

    def ping(self) -> None:
        self.writer.send("PING", on_reply=_ignore)

    def misplaced(self) -> bool:
        return self.reader.misplaced()

    def explain(self, reason: str) -> str:
        return reason

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
        self.ledger.lost()  # no read is out any more, and what was unconfirmed goes again
        self.schedule.lost()

    # Work.

    def tick(self, now: float, free: int) -> None:
        """Send what the ledger says is due (settles, retries, touches, claims, lag, reads), and
        the moves of delayed jobs that are due."""
        for command in self.ledger.plan(now, free):
            self._send(command)
        if not self.ledger.stopped:
            for move in self.schedule.plan(now):
                self._move(move)

    def wake_at(self, free: int) -> float:
        if self.ledger.stopped:
            return self.ledger.wake_at(free)  # no moves while stopping (tick sends none)
        return min(self.ledger.wake_at(free), self.schedule.wake_at())

    def _send(self, command: Command) -> None:
        if isinstance(command, Ack):
            self.writer.send(
                "XACK", command.stream, self.group, *command.ids,
                on_reply=functools.partial(self._acked, command),
            )  # fmt: skip
        elif isinstance(command, AckHeld):
            entry = command.entry
            self.writer.send(
                "EVAL", scripts.ACK_HELD, 1, entry.stream, self.group, entry.id, self.consumer,
                on_reply=functools.partial(self._acked_held, entry),
            )  # fmt: skip
        elif isinstance(command, Bury):
            self._bury(command)
        elif isinstance(command, Later):
            entry = command.entry
            keys = Keys(entry.stream).later()
            self.writer.send(
                "EVAL", scripts.LATER, len(keys), *keys, self.group, entry.id, self.consumer,
                2 if command.away else int(command.resent), round(entry.result.again * 1000), entry.payload,
                command.attempts, entry.first_id or entry.id, entry.guard,
                on_reply=functools.partial(self._later, entry),
            )  # fmt: skip
        elif isinstance(command, Redeliver):
            entry = command.entry
            self.writer.send(
                "EVAL", scripts.REDELIVER, 1, entry.stream, self.group, self.consumer, entry.id,
                entry.deliveries + 1, on_reply=functools.partial(self._redelivered, entry),
            )  # fmt: skip
        elif isinstance(command, Touch):
            self.writer.send(
                "EVAL", scripts.TOUCH, 1, command.stream, self.group, self.consumer, *command.ids,
                on_reply=functools.partial(self._touched, command.stream),
            )  # fmt: skip
        elif isinstance(command, Claim):
            self.writer.send(
                "XAUTOCLAIM", command.stream, self.group, self.consumer,
                int(self.ledger.policy.claim_idle * 1000), command.cursor, "COUNT", command.count,
                on_reply=functools.partial(self._claimed, command.stream),
            )  # fmt: skip
        elif isinstance(command, Prune):
            self.writer.send(
                "EVAL", scripts.PRUNE, 1, command.stream, self.group, self.consumer,
                round(command.idle * 1000), on_reply=functools.partial(self._pruned, command),
            )  # fmt: skip
        elif isinstance(command, QueryLag):
            self.writer.send(
                "XINFO", "GROUPS", command.stream, on_reply=functools.partial(self._on_groups, command.stream)
            )
        elif isinstance(command, Read):
            self._read_sent = time.monotonic()
            # Without CLIENT UNBLOCK, a stream that becomes readable during a blocking read waits
            # for its end: short ones, then, when the streams are read by priority or limits.
            wait = BLOCK_MS if self._reader_id or self.lanes.plain else UNBLOCKLESS_BLOCK_MS
            block = ("BLOCK", wait) if command.block else ()
            self.reader.send(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", command.count, *block,
                "STREAMS", *command.streams, *[">"] * len(command.streams), on_reply=self._on_entries,
            )  # fmt: skip
        elif isinstance(command, (Take, Give)):
            rate = self._rate(command.stream)
            count = command.count if isinstance(command, Take) else -command.count
            self.writer.send(
                "EVAL", scripts.TAKE, 1, Keys(command.stream).rate, repr(rate.per_second / 1000),
                rate.burst, count, on_reply=functools.partial(self._taken, command),
            )  # fmt: skip
        elif isinstance(command, Unlock):
            self.writer.send(
                "EVAL", scripts.UNLOCK, 1, command.guard, command.id,
                on_reply=functools.partial(self._unlocked, command),
            )  # fmt: skip
        elif isinstance(command, Unblock) and self._reader_id:  # else it ends when its BLOCK runs out
            self.writer.send("CLIENT", "UNBLOCK", self._reader_id, on_reply=self._unblocked)

    def _rate(self, stream: str) -> Rate:
        for lane in self.lanes.lanes:
            if lane.stream == stream and lane.rate is not None:
                return lane.rate
        raise KeyError(stream)

    def _move(self, move: Move) -> None:
        keys = Keys(move.stream)
        self.writer.send(
            "EVAL", scripts.MOVE, len(keys.moving()), *keys.moving(), scripts.MOVE_BATCH,
            on_reply=functools.partial(self._moved, move.stream),
        )  # fmt: skip

    # Replies.

    def _on_entries(self, reply: Reply) -> None:
        self._read_sent = math.inf
        if isinstance(reply, ReplyError):
            self.ledger.read_done({})
            if reply.code != "NOGROUP":  # reading is this source's purpose: try again, visibly
                raise redis.ConnectionError(f"XREADGROUP refused: {reply}")
            self._recreate_groups()
            return
        read = replies.xreadgroup(reply)
        self.ledger.read_done({stream: len(entries) for stream, entries in read})
        now = time.monotonic()
        # Also while stopping: the read was out when the stop came, and its entries are pending
        # for this consumer now, where nobody else could take them before claim_idle. They run
        # within the drain like the queued ones (a read asks for no more than the pool's free
        # slots and, for quick jobs only, a little more); what the drain does not finish is said.
        for stream, entries in read:
            for found in entries:
                self._carry_out(self.ledger.take(stream, found, 1, now))

    def _taken(self, command: Take | Give, reply: Reply) -> None:
        if isinstance(command, Give):
            return  # tokens not given back are only lost to the rate: said by nothing
        what = f"the rate script of {command.stream} (its jobs wait in the stream)"
        if isinstance(reply, ReplyError):
            self.ledger.reader.taken(command.stream, 0, 1.0, time.monotonic())
            self._refused_once(reply, what)
            return
        self._refusals.discard(what)
        taken = scripts.taken(reply)
        self.ledger.reader.taken(command.stream, taken.granted, taken.wait, time.monotonic())

    def _moved(self, stream: str, reply: Reply) -> None:
        now = time.monotonic()
        what = f"the move of delayed jobs into {stream} (they wait in {Keys(stream).delayed})"
        if isinstance(reply, ReplyError):
            self.schedule.failed(stream, now)
            self._refused_once(reply, what)
            return
        self._refusals.discard(what)
        moved = scripts.moved(reply)
        self.schedule.moved(stream, len(moved.ids), moved.next_due_in, now)
        if moved.ids:
            self._log.debug("moved %d delayed job(s) into %s", len(moved.ids), stream)

    def _unblocked(self, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            self._no_unblock(reply)

    def _no_unblock(self, error: Exception) -> None:
        """An ACL without CLIENT ID or CLIENT UNBLOCK: a stop waits for the read's BLOCK, and so
        does a stream that becomes readable (said once, when it matters)."""
        self._reader_id = 0
        if self.lanes.plain or self._unblock_said:
            return
        self._unblock_said = True
        self._log.error(
            "redis refused CLIENT ID or UNBLOCK (%s): a stream that becomes readable (a limited stream's "
            "job ended, a rate's token came due) is read after at most %d ms instead of at once; allow "
            "+client|id and +client|unblock for this daemon's user", error, UNBLOCKLESS_BLOCK_MS,
        )  # fmt: skip

    def notices_back(self) -> None:
        """The delayed-job notices are (re)subscribed: what was announced meanwhile is missed."""
        self.schedule.ask()

    def heard(self, message: Message) -> None:
        """A notice on ``<stream>:delayed``: a job due in so many ms, before any other."""
        stream = stream_of_notices(message.channel)
        try:
            due_in = float(message.payload) / 1000
        except ValueError:
            return  # not ours: the refresh covers anything missed
        self.schedule.heard(stream, max(0.0, due_in), time.monotonic())

    def _unlocked(self, unlock: Unlock, reply: Reply) -> None:
        if isinstance(reply, ReplyError) and reply.code in RECONNECT_ON:
            raise redis.ConnectionError(f"the release of guard {unlock.guard} refused: {reply}")  # sent again
        self.ledger.unlocked(unlock)
        if isinstance(reply, ReplyError):
            self._refused_by_redis(reply, "the release of a unique job's guard (it expires at unique_for)")

    def _claimed(self, stream: str, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            self.ledger.claim_done(stream, "0-0")
            self._refused_by_redis(reply, "XAUTOCLAIM")
            return
        claim = replies.xautoclaim(reply)
        brought = 0 if self.ledger.stopped else len(claim.entries)
        self.ledger.claim_done(stream, claim.cursor, brought)
        if claim.deleted:
            self._log.error(
                "%d pending entr%s of %s no longer in the stream (trimmed by MAXLEN, or deleted): %s",
                len(claim.deleted), "y" if len(claim.deleted) == 1 else "ies", stream,
                ", ".join(claim.deleted[:20]),
            )  # fmt: skip
        if not claim.entries or self.ledger.stopped:
            return  # what a claim brought while stopping stays pending, for whoever reads next
        ids = [e.id for e in claim.entries]
        self._log.warning(
            "claimed %d entr%s of %s idle for over %g s from consumers that stopped",
            len(ids), "y" if len(ids) == 1 else "ies", stream, self.ledger.policy.claim_idle,
        )  # fmt: skip

        def counted(pending: Reply) -> None:
            deliveries = {} if isinstance(pending, ReplyError) else replies.xpending_deliveries(pending)
            now = time.monotonic()
            for found in claim.entries:
                if not self.ledger.stopped:
                    self._carry_out(self.ledger.take(stream, found, deliveries.get(found.id, 2), now))
            self.ledger.claim_taken(stream)

        self.writer.send(
            "XPENDING", stream, self.group, min(ids, key=id_key), max(ids, key=id_key),
            len(ids) + len(self.ledger), self.consumer, on_reply=counted,
        )  # fmt: skip

    def _redelivered(self, entry: Entry, reply: Reply) -> None:
        if isinstance(reply, ReplyError) and reply.code in RECONNECT_ON:
            # Not an answer about the entry (a failover, a moved slot): asked again once connected
            # where it can be (Ledger.lost), not taken for "no longer pending".
            raise redis.ConnectionError(f"XCLAIM for the retry of entry {entry.id} refused: {reply}")
        present = not isinstance(reply, ReplyError) and entry.id in replies.xclaim_ids(reply)
        self._carry_out(self.ledger.redelivered(entry, present, time.monotonic()))
        if isinstance(reply, ReplyError):
            self._refused_by_redis(reply, f"XCLAIM for the retry of entry {entry.id} (left pending)")

    def _acked(self, command: Ack, reply: Reply) -> None:
        if isinstance(reply, ReplyError) and reply.code in RECONNECT_ON:
            # Sent again once connected where it can be (Ledger.lost): let go here, the entries
            # would stay pending and run again after claim_idle.
            raise redis.ConnectionError(f"XACK of {len(command.ids)} entries refused: {reply}")
        entries = [self.ledger.entry(command.stream, entry_id) for entry_id in command.ids]
        for entry in entries:
            if entry is None:
                continue
            if isinstance(reply, ReplyError):
                self.ledger.refused(entry)  # it stays pending in Redis, claimed and settled later
            else:
                self.ledger.confirmed(entry)
        if isinstance(reply, ReplyError):
            self._refused_by_redis(reply, f"XACK of {len(command.ids)} entries (left pending)")

    def _acked_held(self, entry: Entry, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            if reply.code in RECONNECT_ON:  # sent again once connected where it can be (Ledger.lost)
                raise redis.ConnectionError(f"the acknowledgement of entry {entry.id} refused: {reply}")
            self.ledger.refused(entry)  # it stays pending in Redis, claimed and settled later
            self._refused_by_redis(reply, f"the acknowledgement of unique entry {entry.id} (left pending)")
            return
        self.ledger.confirmed(entry, release_guard=reply == 1)
        if reply != 1:
            self._log.warning(
                "entry %s of %s was claimed by another consumer while its job ran here: that copy holds its "
                "unique guard, and settles it", entry.id, entry.stream,
                extra={"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id},
            )  # fmt: skip

    def _bury(self, command: Bury) -> None:
        entry, result = command.entry, command.entry.result
        reason = result.reason or result.outcome.value
        fields: list[str | bytes | int] = [
            "id", entry.id, "payload", entry.payload, "attempts", entry.attempts, "reason", reason,
            "status", result.status or "", "stderr", result.stderr[:STDERR_EXCERPT], "daemon", self.consumer,
            "time", f"{time.time():.3f}",
        ]  # fmt: skip
        if entry.guard:
            fields += ["unique", entry.guard]  # a replay holds the guard again (scripts.REPLAY)
        if entry.first_id:
            fields += ["first_id", entry.first_id]
        self.writer.send(
            "EVAL", scripts.BURY, 2, entry.stream, Keys(entry.stream).dead,
            self.group, entry.id, self.consumer, int(command.resent), DEAD_MAXLEN, *fields,
            on_reply=functools.partial(self._buried, entry, reason),
        )  # fmt: skip

    def _buried(self, entry: Entry, reason: str, reply: Reply) -> None:
        fields = {"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id}
        if isinstance(reply, ReplyError):
            if reply.code in RECONNECT_ON:  # sent again once connected where it can be (Ledger.lost)
                raise redis.ConnectionError(f"the dead letter of entry {entry.id} refused: {reply}")
            # Not stored, not acknowledged: it stays pending, to be claimed and buried later.
            self._log.error(
                "entry %s of %s stays pending: redis refused its dead letter: %s",
                entry.id, entry.stream, reply, extra=fields,
            )  # fmt: skip
            self.ledger.refused(entry)
            return
        self.ledger.confirmed(entry, release_guard=reply is not None)
        if reply is None:
            # Its guard, if any, goes with the copy that holds the entry now.
            self._log.warning(
                "entry %s of %s was taken over by another consumer before its dead letter: it is theirs "
                "to settle, none written here", entry.id, entry.stream, extra=fields,
            )  # fmt: skip
            return
        self._counters.dead_lettered += 1
        self._metrics.dead_lettered(entry.stream)
        self._log.error(
            "entry %s of %s dead-lettered to %s after %d attempt(s): %s; message %s",
            entry.id, entry.stream, Keys(entry.stream).dead, entry.attempts, reason,
            preview(entry.payload), extra=fields,
        )  # fmt: skip

    def _later(self, entry: Entry, reply: Reply) -> None:
        fields = {"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id}
        if isinstance(reply, ReplyError):
            if reply.code in RECONNECT_ON:  # sent again once connected where it can be (Ledger.lost)
                raise redis.ConnectionError(f"the delayed run of entry {entry.id} refused: {reply}")
            # Not added, not acknowledged: it stays pending, claimed and run again after claim_idle.
            self._log.error(
                "entry %s of %s stays pending: redis refused to put it back through %s: %s",
                entry.id, entry.stream, Keys(entry.stream).delayed, reply, extra=fields,
            )  # fmt: skip
            self.ledger.refused(entry)
            return
        # Its guard, if any, moved with it to the delayed job (or stays with the copy that holds it).
        self.ledger.confirmed(entry, release_guard=False)
        if reply is None:
            self._log.warning(
                "entry %s of %s was taken over by another consumer before its delayed run was added: it is "
                "theirs to settle", entry.id, entry.stream, extra=fields,
            )  # fmt: skip
        elif self._log.isEnabledFor(logging.INFO):
            delayed = replies.text(reply)
            self._log.info(
                "entry %s of %s acknowledged and delayed as %s, due in %g s, after attempt %d%s",
                entry.id, entry.stream, delayed or "before the connection was lost", entry.result.again,
                entry.attempts, f" (first entry {entry.first_id})" if entry.first_id else "", extra=fields,
            )  # fmt: skip

    def _pruned(self, command: Prune, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            if reply.code != "NOGROUP":  # no group yet: nothing to remove
                self._refused_once(reply, f"the removal of idle consumers of {command.stream}")
            return
        names = replies.texts(reply)
        if names:
            self._log.info(
                "removed %d consumer(s) of group %s on %s that held nothing and had not read for %g s: %s",
                len(names), self.group, command.stream, command.idle, ", ".join(names[:20]),
            )  # fmt: skip

    def _touched(self, stream: str, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            self._refused_by_redis(reply, "XCLAIM to reset the idle time of held entries")
            return
        gone = replies.texts(reply)
        if gone:
            self.ledger.claimed_away(stream, gone)
            self._log.warning(
                "%d entr%s of %s held here %s claimed by another consumer (this daemon looked stopped for "
                "claim_idle): each is settled by the copy that holds it: %s",
                len(gone), "y" if len(gone) == 1 else "ies", stream, "was" if len(gone) == 1 else "were",
                ", ".join(gone[:20]),
            )  # fmt: skip

    def _on_groups(self, stream: str, reply: Reply) -> None:
        if isinstance(reply, ReplyError):
            return  # the read will say NOGROUP if it matters
        info = replies.xinfo_groups(reply).get(self.group)
        if info is not None:
            self.lag[stream] = info.lag
            self._metrics.stream(stream, info.lag, info.pending)
            self._delivered[stream] = info.last_delivered
            self._record(stream, info.last_delivered)

    def _record(self, stream: str, position: str) -> None:
        """Keep the group's position in <stream>:groups, when it has moved."""
        if not position or self._recorded.get(stream) == position or self._unrecordable:
            return
        self._recorded[stream] = position

        def recorded(reply: Reply) -> None:
            if isinstance(reply, ReplyError) and not self._unrecordable:
                self._unrecordable = True
                self._log.error(
                    "redis refused to record the group's position in %s: %s; a group that vanishes "
                    "is then made again where this daemon knows it was", Keys(stream).groups, reply,
                )  # fmt: skip

        self.writer.send(
            "EVAL", scripts.POSITION, 1, Keys(stream).groups, self.group, position, on_reply=recorded
        )

    def _refused_once(self, error: ReplyError, command: str) -> None:
        """A command sent again every turn or so: its refusal is said once, and again only after
        it has run since."""
        if command not in self._refusals or error.code in RECONNECT_ON or error.code == "NOGROUP":
            self._refusals.add(command)
            self._refused_by_redis(error, command)

    def _refused_by_redis(self, error: ReplyError, command: str) -> None:
        """One command refused: a group that vanished is made again; a server that cannot take
        writes now (a replica after a failover, loading) is reconnected to; anything else (an
        ACL, say) is said, and the loop goes on."""
        if error.code == "NOGROUP":
            self._recreate_groups()
        elif error.code in RECONNECT_ON:
            raise redis.ConnectionError(f"{command} refused: {error}")
        else:
            self._log.error("redis refused %s: %s", command, error)

    # The ledger's decisions, carried out.

    def _carry_out(self, decision: Decision) -> None:
        if isinstance(decision, Deliver):
            if decision.job is not None:
                self._resubmit(decision.job)  # the same job: decoded and counted once
            else:
                self._deliver(decision.message)
        elif isinstance(decision, Released) and decision.why:
            entry = decision.entry
            self._log.warning(
                "entry %s of %s left pending (%s): another consumer, or this one after a restart, claims it "
                "after claim_idle; attempt %d of %d", entry.id, entry.stream, decision.why, entry.attempts,
                self.ledger.policy.max_attempts,
                extra={"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id},
            )  # fmt: skip
        elif isinstance(decision, Retrying):
            entry = decision.entry
            self._counters.retried += 1
            self._metrics.retried(entry.stream)
            self._log.warning(
                "entry %s of %s: attempt %d of %d failed (%s); again in %.1f s",
                entry.id, entry.stream, entry.attempts, self.ledger.policy.max_attempts,
                entry.result.reason or entry.result.outcome.value, decision.delay,
                extra={"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id},
            )  # fmt: skip

    # Origin: the daemon reports how each job made from an entry ended.

    def ended(self, job: Job, result: Result) -> None:
        self._carry_out(self.ledger.ended(job, result, time.monotonic()))

    def rejected(self, message: Message, reason: str) -> None:
        self._carry_out(self.ledger.rejected(message.channel, message.message_id, reason, time.monotonic()))

    # Stopping.

    def stop(self) -> None:
        """Stop reading; entries waiting for a retry are left pending for another consumer."""
        for entry in self.ledger.stop():
            self._carry_out(Released(entry, "waiting for a retry when the daemon stopped"))
        if self.ledger.reading and self._reader_id:
            # The read out would deliver entries nobody here will run: end its BLOCK now.
            self.writer.send("CLIENT", "UNBLOCK", self._reader_id, on_reply=_ignore)

    @property
    def settled(self) -> bool:
        """No settle unconfirmed, and no read out whose entries would be stranded here."""
        return self.ledger.settled and not self.ledger.reading

    def leave(self) -> None:
        unsettled = self.ledger.unsettled
        if unsettled:
            self._log.error(
                "%d settle(s) not confirmed by redis when the drain ended: those redis did not apply leave "
                "their entries pending, to run again after claim_idle here or elsewhere", unsettled,
            )  # fmt: skip
        for stream, position in self.ledger.last_read.items():
            self._record(stream, position)  # the newest this daemon read, for a group that vanishes
        for stream in self.streams:
            self.writer.send("EVAL", scripts.LEAVE, 1, stream, self.group, self.consumer, on_reply=_ignore)

    def status(self) -> str:
        lags = [lag for lag in self.lag.values() if lag >= 0]
        lag = f"lag {sum(lags)} · " if lags else ""
        return f"{lag}{self._counters.dead_lettered} dead-lettered"


def _ignore(reply: Reply) -> None:
    pass
