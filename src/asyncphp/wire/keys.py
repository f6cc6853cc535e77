"""Every Redis key and channel name asyncphp uses, beside the ones an application names (pure).

Beside the stream ``S``, under its name (so that one ACL key pattern, ``S*``, covers them all, and
on a cluster a stream named ``{S}`` keeps them all in its slot):

    S:dead             stream: the dead letters, each with the entry's fields and why it died
    S:groups           hash: each group's last delivered id, as last seen. It outlives the group,
                       so that one deleted (XGROUP DESTROY) is made again there, not from the start
    S:delayed          sorted set: delayed job id → due time (ms since the epoch); also the pub/sub
                       channel on which a job due before all others is announced (ms from now)
    S:delayed:jobs     hash: delayed job id → payload
    S:delayed:unique   hash: delayed job id → "<guard key>\\n<processed|expiry>"
    S:delayed:seq      counter for delayed job ids (d1, d2, …)
    S:delayed:lineage  hash: delayed job id → "<attempts so far>\\n<first entry id>", for a job its worker
                       asked to run again later: the entry it becomes carries them on
    S:unique:<key>     a unique job's guard: the id of the job that holds it, with a TTL
    S:rate             a rate limit's token bucket (tokens, at)
    S:maxlen           the length the publisher keeps the stream at (XADD MAXLEN ~), recorded by ADD:
                       the daemon's moves and an operator's replays trim to it, so that one delayed job
                       never trims a stream to some other writer's idea of its length

And one of the daemon's own: ``asyncphp:daemon:<consumer>``, a hash with its heartbeat (what
``asyncphp status`` lists), expiring when the daemon stops beating.

The PHP client (php/src/Scripts.php) spells the scheduling names too; tests/unit/test_php_contract
holds the two to the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

DELAYED_SUFFIX = ":delayed"
DAEMON_PREFIX = "asyncphp:daemon:"


def daemon(consumer: str) -> str:
    """The key of a daemon's heartbeat."""
    return DAEMON_PREFIX + consumer


def stream_of_notices(channel: str) -> str:
    """The stream whose delayed-job notices ``channel`` carries."""
    return channel.removesuffix(DELAYED_SUFFIX)


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys beside one stream."""

    stream: str

    @property
    def dead(self) -> str:
        return self.stream + ":dead"

    @property
    def groups(self) -> str:
        return self.stream + ":groups"

    @property
    def delayed(self) -> str:
        return self.stream + DELAYED_SUFFIX

    @property
    def jobs(self) -> str:
        return self.stream + ":delayed:jobs"

    @property
    def unique_of(self) -> str:
        return self.stream + ":delayed:unique"

    @property
    def lineage(self) -> str:
        return self.stream + ":delayed:lineage"

    @property
    def seq(self) -> str:
        return self.stream + ":delayed:seq"

    @property
    def rate(self) -> str:
        return self.stream + ":rate"

    @property
    def maxlen(self) -> str:
        return self.stream + ":maxlen"

    def guard(self, unique_key: str) -> str:
        return f"{self.stream}:unique:{unique_key}"

    def moving(self) -> tuple[str, ...]:
        """The KEYS of MOVE and CANCEL."""
        return self.stream, self.delayed, self.jobs, self.unique_of, self.maxlen, self.lineage

    def adding(self, unique_key: str) -> tuple[str, ...]:
        """The KEYS of ADD (the PHP client's copy names them in this order too)."""
        guard = self.guard(unique_key)
        return self.stream, self.delayed, self.jobs, self.unique_of, self.maxlen, self.seq, guard

    def later(self) -> tuple[str, ...]:
        """The KEYS of LATER."""
        return self.stream, self.delayed, self.jobs, self.unique_of, self.seq, self.lineage
