"""The durable source: Redis Streams read through a consumer group, acknowledged on the worker's result.

    XREADGROUP (no more entries than free request slots) ─▶ job ─▶ pool ─▶ result
        2xx/3xx → XACK · 4xx or a bad message → dead letter + XACK
        5xx, fatal error, pool unreachable → again after a growing delay, up to max_attempts, then
        dead letter + XACK · still running at shutdown → left pending for another consumer

Two connections, both driven by the event loop (``redislink``): one blocks in XREADGROUP, the
other carries acknowledgements, dead letters, claims and lag queries, in order. An entry stays
in this consumer's pending list until it is settled; while it is held here its idle time is
reset (XCLAIM … JUSTID), so only the entries of a consumer that died reach ``claim_idle`` and
are taken over by XAUTOCLAIM, here or on another host.
"""

from __future__ import annotations

import functools
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import hiredis
import redis

from asyncphp.core.jobs import Job, Message, Outcome, Result
from asyncphp.logfmt import preview
from asyncphp.loop.redislink import Link, ignore

if TYPE_CHECKING:  # prometheus_client is only imported when metrics are on
    from asyncphp.ops.metrics import Metrics

DEAD_SUFFIX = ":dead"
DEAD_MAXLEN = 100_000  # dead letters kept per stream (approximately)
BLOCK_MS = 2000  # XREADGROUP waits this long for entries, then is sent again
STDERR_EXCERPT = 2000  # bytes of the worker's stderr kept in a dead letter
RETRY_DELAY_CAP = 300.0  # seconds


@dataclass(slots=True)
class Entry:
    """A stream entry held by this consumer until it is settled."""

    stream: str
    id: str
    payload: bytes
    attempts: int  # deliveries so far, as Redis counts them (XPENDING)
    touched: float = field(default_factory=time.monotonic)


class StreamSource:
    def __init__(
        self,
        url: str,
        streams: tuple[str, ...],
        *,
        group: str,
        consumer: str,
        claim_idle: float,
        max_attempts: int,
        retry_delay: float,
        password_file: str | None,
        deliver: Callable[[Message], None],
        resubmit: Callable[[Job], None],
        log: logging.Logger,
    ) -> None:
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.claim_idle = claim_idle
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self._deliver = deliver
        self._resubmit = resubmit
        self._log = log
        self.reader = Link(url, password_file)
        self.writer = Link(url, password_file)
        self._held: dict[tuple[str, str], Entry] = {}
        self._retries: list[tuple[float, int, Entry, Job]] = []  # a heap by due time
        self._retry_seq = 0
        self._acks: dict[str, list[str]] = {}
        self._reading = False
        self._read_sent = 0.0  # when the XREADGROUP now out was sent
        self._claiming = False
        self._claim_from: dict[str, str] = {}  # where each stream's XAUTOCLAIM scan goes on
        self._stopped = False
        self._next_claim = 0.0
        self._next_touch = 0.0
        self._next_lag = 0.0
        self.lag: dict[str, int | None] = {}
        self.dead = 0
        self.metrics: Metrics | None = None

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
        for stream in self.streams:
            try:
                # From "0": entries added while no daemon ever read this stream are work too.
                self.writer.call("XGROUP", "CREATE", stream, self.group, "0", "MKSTREAM")
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self.reader.start()
        self.writer.start()
        self._reading = self._claiming = False
        self._next_touch = 0.0
        self._next_claim = 0.0  # claim what dead consumers left, now
        for held in self._held.values():
            held.touched = 0.0  # touch at once: the outage may have made them look idle
        return where

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
        if self._reading and time.monotonic() - self._read_sent > BLOCK_MS / 1000 + 1:
            return min(self.reader.last_read, self._read_sent)
        return max(self.reader.last_read, self.writer.last_read)

    def ping(self) -> None:
        self.writer.send("PING", on_reply=ignore)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    # Receiving.

    def pull(self, free: int) -> None:
        """Ask for at most ``free`` entries (the free request slots), unless a read is out."""
        if self._stopped or self._reading or free <= 0:
            return
        self._reading = True
        self._read_sent = time.monotonic()
        count = max(1, free // len(self.streams))
        self.reader.send(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, "BLOCK", BLOCK_MS,
            "STREAMS", *self.streams, *[">"] * len(self.streams), on_reply=self._on_entries,
        )  # fmt: skip

    def _on_entries(self, reply: object) -> None:
        self._reading = False
        self._read_sent = 0.0
        if self._stopped:
            return  # what this last read brought stays pending, for another consumer to claim
        if isinstance(reply, hiredis.ReplyError):
            # NOGROUP: the stream or its group was deleted under us; reconnecting recreates both.
            raise redis.ConnectionError(f"XREADGROUP refused: {reply}")
        for stream, entries in reply or []:  # type: ignore[attr-defined]
            for entry_id, fields in entries:
                self._take(stream.decode(), entry_id.decode(), fields, attempts=1)

    def _take(self, stream: str, entry_id: str, fields: list[bytes] | None, attempts: int) -> None:
        key = (stream, entry_id)
        if key in self._held:
            return  # already ours (a claim raced with our own delivery)
        values = dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}
        entry = Entry(stream, entry_id, values.get(b"payload", b""), attempts)
        self._held[key] = entry
        if b"payload" not in values:
            self.settle(entry, Result(Outcome.REJECTED, "the entry has no payload field"))
            return
        if attempts > self.max_attempts:
            # Delivered more often than allowed without ever being settled: it may be what killed
            # the daemons that had it.
            reason = f"delivered {attempts} times without an outcome (a daemon may have died on it)"
            self._bury(entry, Result(Outcome.FAILED, reason))
            return
        self._deliver(Message(stream, entry.payload, entry, entry_id, attempts))

    # Settling.

    def settle(self, entry: Entry, result: Result, job: Job | None = None) -> None:
        """Acknowledge, dead-letter, or keep ``job`` (the entry's, when it ran) for a retry."""
        # entry.attempts counts deliveries, as Redis does; the dispatcher's re-sends after pool
        # faults (job.attempts) are not deliveries and do not bring the dead letter closer.
        outcome = result.outcome
        if outcome is Outcome.COMPLETED:
            self._ack(entry)
        elif outcome is Outcome.REJECTED:
            self._bury(entry, result)
        elif outcome in (Outcome.FAILED, Outcome.UNDELIVERED) and job is not None:
            if entry.attempts >= self.max_attempts:
                self._bury(entry, result)
            else:
                delay = min(RETRY_DELAY_CAP, self.retry_delay * 2 ** (entry.attempts - 1))
                self._log.warning(
                    "entry %s of %s: attempt %d of %d failed (%s); again in %.1f s",
                    entry.id, entry.stream, entry.attempts, self.max_attempts,
                    result.reason or result.outcome.value, delay,
                    extra={"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id},
                )  # fmt: skip
                self._retry_seq += 1
                heapq.heappush(self._retries, (time.monotonic() + delay, self._retry_seq, entry, job))
        else:
            # DROPPED or ABANDONED: it stays pending, for XAUTOCLAIM here or elsewhere.
            self._held.pop((entry.stream, entry.id), None)

    def _ack(self, entry: Entry) -> None:
        self._held.pop((entry.stream, entry.id), None)
        self._acks.setdefault(entry.stream, []).append(entry.id)

    def _bury(self, entry: Entry, result: Result) -> None:
        """Copy the entry to ``<stream>:dead`` with why, then acknowledge it."""
        reason = result.reason or result.outcome.value
        fields: list[str | bytes | int] = [
            "id", entry.id, "payload", entry.payload, "attempts", entry.attempts, "reason", reason,
            "status", "" if result.status is None else result.status,
            "stderr", result.stderr[:STDERR_EXCERPT], "daemon", self.consumer, "time", f"{time.time():.3f}",
        ]  # fmt: skip
        self._log.error(
            "entry %s of %s dead-lettered to %s after %d attempt(s): %s; message %s",
            entry.id, entry.stream, entry.stream + DEAD_SUFFIX, entry.attempts, reason,
            preview(entry.payload), extra={"ASYNCPHP_CHANNEL": entry.stream, "ASYNCPHP_MESSAGE_ID": entry.id},
        )  # fmt: skip
        self.dead += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(entry.stream)

        def stored(reply: object) -> None:
            # Acknowledged only once the dead letter is stored: a refused one (no room, wrong
            # key type, an ACL) leaves the entry pending, to be claimed and buried again later.
            if isinstance(reply, hiredis.ReplyError):
                self._log.error(
                    "entry %s of %s stays pending: redis refused its dead letter: %s",
                    entry.id,
                    entry.stream,
                    reply,
                )
                self._held.pop((entry.stream, entry.id), None)
            else:
                self._ack(entry)

        try:
            self.writer.send(
                "XADD", entry.stream + DEAD_SUFFIX, "MAXLEN", "~", DEAD_MAXLEN, "*", *fields, on_reply=stored
            )
        except redis.ConnectionError:
            # Not stored, not acknowledged: it stays pending, and is claimed (and buried) later.
            self._held.pop((entry.stream, entry.id), None)

    def _flush_acks(self) -> None:
        for stream, ids in self._acks.items():
            self.writer.send("XACK", stream, self.group, *ids, on_reply=_check)
        self._acks.clear()

    # Periodic work, from the event loop.

    def tick(self, free: int) -> None:
        """Acks out, retries due back in, claims and idle-time resets when due, then read."""
        now = time.monotonic()
        if self._acks:
            self._flush_acks()
        while not self._stopped and self._retries and self._retries[0][0] <= now and free > 0:
            _, _, entry, job = self._retries[0]
            # XCLAIM to ourselves counts the delivery in Redis, so a crash does not reset it.
            self.writer.send("XCLAIM", entry.stream, self.group, self.consumer, 0, entry.id, on_reply=_check)
            heapq.heappop(self._retries)
            entry.attempts += 1
            entry.touched = now
            free -= 1
            # The same job again, body and all: the message was decoded and counted once.
            job.attempts, job.received, job.last_error = entry.attempts - 1, now, ""
            self._resubmit(job)
        if not self._stopped and now >= self._next_touch:
            self._next_touch = now + self.claim_idle / 4
            self._touch(now)
        free -= len(self._retries)  # entries held for a retry will need their slots too
        if not self._stopped and not self._claiming and now >= self._next_claim and free > 0:
            self._next_claim = now + self.claim_idle / 2
            self._claim(free)
        if now >= self._next_lag:
            self._next_lag = now + 5.0
            for stream in self.streams:
                self.writer.send(
                    "XINFO", "GROUPS", stream, on_reply=functools.partial(self._on_groups, stream)
                )
        self.pull(free)

    def wake_at(self) -> float | None:
        return self._retries[0][0] if self._retries else None

    def _touch(self, now: float) -> None:
        """Reset the idle time of entries held here for a while, so nobody claims them from us."""
        by_stream: dict[str, list[str]] = {}
        for entry in self._held.values():
            if now - entry.touched > self.claim_idle / 4:
                entry.touched = now
                by_stream.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in by_stream.items():
            self.writer.send("XCLAIM", stream, self.group, self.consumer, 0, *ids, "JUSTID", on_reply=_check)

    def _claim(self, free: int) -> None:
        self._claiming = True
        remaining = list(self.streams)

        def claimed(stream: str, reply: object) -> None:
            remaining.remove(stream)
            if not remaining:
                self._claiming = False
            if self._stopped or isinstance(reply, hiredis.ReplyError) or not reply:
                return
            # Follow the scan: more idle entries may lie further on; come back next turn, not in
            # claim_idle/2, until the scan wraps to 0-0.
            cursor = reply[0].decode()  # type: ignore[index]
            self._claim_from[stream] = cursor
            if cursor != "0-0":
                self._next_claim = 0.0
            gone = [i.decode() for i in reply[2]] if len(reply) > 2 else []  # type: ignore[arg-type,index]
            if gone:
                self._log.error(
                    "%d pending entr%s of %s no longer in the stream (trimmed by MAXLEN, or deleted): %s",
                    len(gone), "y" if len(gone) == 1 else "ies", stream, ", ".join(gone[:20]),
                )  # fmt: skip
            entries = [(e[0].decode(), e[1]) for e in reply[1] if e[1] is not None]  # type: ignore[index]
            if not entries:
                return
            ids = [entry_id for entry_id, _ in entries]
            self._log.warning(
                "claimed %d entr%s of %s idle for over %g s from consumers that stopped",
                len(ids), "y" if len(ids) == 1 else "ies", stream, self.claim_idle,
            )  # fmt: skip

            def counted(pending: object) -> None:
                if self._stopped:
                    return  # claimed, but left pending for whoever reads next
                deliveries = {}
                if not isinstance(pending, hiredis.ReplyError):
                    deliveries = {row[0].decode(): int(row[3]) for row in pending or []}  # type: ignore[attr-defined]
                for entry_id, fields in entries:
                    self._take(stream, entry_id, fields, attempts=deliveries.get(entry_id, 2))

            self.writer.send(
                "XPENDING", stream, self.group, min(ids, key=_id_key), max(ids, key=_id_key),
                len(ids) + len(self._held),
                self.consumer, on_reply=counted,
            )  # fmt: skip

        for stream in self.streams:
            self.writer.send(
                "XAUTOCLAIM", stream, self.group, self.consumer, int(self.claim_idle * 1000),
                self._claim_from.get(stream, "0-0"),
                "COUNT", max(1, free // len(self.streams)),
                on_reply=functools.partial(claimed, stream),
            )  # fmt: skip

    def _on_groups(self, stream: str, reply: object) -> None:
        if isinstance(reply, hiredis.ReplyError):
            return
        for group in reply or []:  # type: ignore[attr-defined]
            info = dict(zip(group[::2], group[1::2], strict=True))
            if info.get(b"name") == self.group.encode():
                lag = info.get(b"lag")
                self.lag[stream] = int(lag) if isinstance(lag, int) else None

    # Stopping.

    def stop(self) -> None:
        """Stop reading; what is held stays pending for another consumer unless it ends here."""
        self._stopped = True
        self._retries.clear()

    def flush(self, timeout: float = 2.0) -> None:
        """Send the last acks and wait (bounded) for Redis to confirm them."""
        try:
            self._flush_acks()
            deadline = time.monotonic() + timeout
            while self.writer.waiting and time.monotonic() < deadline:
                self.writer.wait_readable(deadline - time.monotonic())
                self.writer.drain()
        except redis.ConnectionError:
            pass


def _check(reply: object) -> None:
    if isinstance(reply, hiredis.ReplyError):
        raise redis.ConnectionError(f"redis refused: {reply}")


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
