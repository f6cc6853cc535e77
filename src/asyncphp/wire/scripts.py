"""The Lua scripts of the scheduling features, and the keys they use beside a stream (pure).

Each runs atomically in Redis, so that a publisher, any number of daemons and an operator's
command can act on the same keys at once without a lock. Times are Redis's own (``TIME``):
publishers and daemons on other hosts never need their clocks to agree.

Beside the stream ``S``, under its name (so that one ACL key pattern, ``S*``, covers them all):

    S:delayed          sorted set: delayed job id → due time (ms since the epoch); also the pub/sub
                       channel on which a job due before all others is announced (ms from now)
    S:delayed:jobs     hash: delayed job id → payload
    S:delayed:unique   hash: delayed job id → "<guard key>\\n<processed|expiry>"
    S:delayed:seq      counter for delayed job ids (d1, d2, …)
    S:unique:<key>     a unique job's guard: the id of the job that holds it, with a TTL
    S:rate             a rate limit's token bucket (tokens, at)
    S:maxlen           the length the publisher keeps the stream at (XADD MAXLEN ~), recorded by ADD:
                       the daemon's moves and an operator's replays trim to it, so that one delayed job
                       never trims a stream to some other writer's idea of its length

A delayed job becomes a stream entry with the fields ``payload``, ``due_at`` (seconds since the
epoch, to the ms) and ``delayed_id``; a unique one held until processed also has ``unique`` (its
guard's key), which the daemon releases when it acknowledges or dead-letters the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MAXLEN = 1_000_000  # entries a stream keeps, approximately (XADD MAXLEN ~)
DELAYED_SUFFIX = ":delayed"  # <stream>:delayed, the sorted set and the channel of its notices
MOVE_BATCH = 500  # delayed jobs moved by one run of MOVE: a few ms of Redis at most


@dataclass(frozen=True, slots=True)
class Keys:
    stream: str

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

    def moving(self) -> tuple[str, str, str, str, str]:
        """The KEYS of MOVE and CANCEL."""
        return self.stream, self.delayed, self.jobs, self.unique_of, self.maxlen

    def adding(self, unique_key: str) -> tuple[str, ...]:
        """The KEYS of ADD."""
        return *self.moving(), self.seq, self.guard(unique_key)


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: stream, delayed, jobs, unique_of, maxlen, seq, guard (Keys.adding).
# ARGV: payload, maxlen, delay ms (-1: none), at ms (-1: none), unique key ('' : none),
#       unique_for ms, 'processed' | 'expiry'.
# Returns {added (1/0), id, due ms (-1: none)}: the id of the job added, or of the one holding the
# guard (then nothing was added). A job due now or in the past goes straight into the stream.
ADD = (
    _NOW
    + """
local due = -1
if tonumber(ARGV[3]) >= 0 then
    due = now + tonumber(ARGV[3])
elseif tonumber(ARGV[4]) >= 0 then
    due = tonumber(ARGV[4])
end
local unique = ARGV[5] ~= ''
if unique and not (tonumber(ARGV[6]) and tonumber(ARGV[6]) >= 1) then
    return redis.error_reply('ERR unique_for must be at least 1 ms')
end
if unique then
    local held = redis.call('GET', KEYS[7])
    if held then
        return {0, held, -1}
    end
end
redis.call('SET', KEYS[5], ARGV[2])
local id
if due > now then
    id = 'd' .. redis.call('INCR', KEYS[6])
    redis.call('ZADD', KEYS[2], due, id)
    redis.call('HSET', KEYS[3], id, ARGV[1])
    if unique then
        redis.call('HSET', KEYS[4], id, KEYS[7] .. '\\n' .. ARGV[7])
    end
    -- Due before any other: the daemons sleep until a later time, so tell them (in ms from now).
    -- pcall: a channel an ACL refuses must not fail an add half made (the daemons' refresh finds it).
    if redis.call('ZRANGE', KEYS[2], 0, 0)[1] == id then
        redis.pcall('PUBLISH', KEYS[2], due - now)
    end
else
    local fields = {'payload', ARGV[1]}
    if due >= 0 then
        table.insert(fields, 'due_at')
        table.insert(fields, string.format('%.3f', due / 1000))
    end
    if unique and ARGV[7] == 'processed' then
        table.insert(fields, 'unique')
        table.insert(fields, KEYS[7])
    end
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
end
if unique then
    redis.call('SET', KEYS[7], id, 'PX', ARGV[6])
end
return {1, id, due}
"""
)

# KEYS: stream, delayed, jobs, unique_of, maxlen (Keys.moving).  ARGV: batch, then delayed ids to
# move now (run-now) instead of those due. The stream is trimmed to the length its publisher
# recorded, and not at all when none did (the publisher's next add trims it).
# Returns {Redis's now ms, the next due ms (-1: none waiting), delayed id, entry id, …}.
# Every daemon runs it when a due time comes; whoever runs first moves the job, the others find
# nothing. The move, the removal and the guard's new holder are one step: a daemon killed after
# it leaves an ordinary entry in the stream, read by whichever consumer reads next.
MOVE = (
    _NOW
    + """
local maxlen = redis.call('GET', KEYS[5])
local trim = {}
if maxlen then trim = {'MAXLEN', '~', maxlen} end
local ids
if #ARGV > 1 then
    ids = {}
    for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
    ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
end
local out = {now, -1}
for _, id in ipairs(ids) do
    local due = redis.call('ZSCORE', KEYS[2], id)
    if due then
        due = math.min(tonumber(due), now)
        local fields = {}
        local payload = redis.call('HGET', KEYS[3], id)
        if payload then
            fields = {'payload', payload}
        end
        table.insert(fields, 'due_at')
        table.insert(fields, string.format('%.3f', due / 1000))
        table.insert(fields, 'delayed_id')
        table.insert(fields, id)
        local guard, mode
        local unique = redis.call('HGET', KEYS[4], id)
        if unique then
            guard, mode = string.match(unique, '^(.*)\\n(%a+)$')
            if guard and mode == 'processed' then
                table.insert(fields, 'unique')
                table.insert(fields, guard)
            end
        end
        local add = {'XADD', KEYS[1]}
        for _, word in ipairs(trim) do add[#add + 1] = word end
        add[#add + 1] = '*'
        for _, field in ipairs(fields) do add[#add + 1] = field end
        local entry = redis.call(unpack(add))
        redis.call('ZREM', KEYS[2], id)
        redis.call('HDEL', KEYS[3], id)
        redis.call('HDEL', KEYS[4], id)
        if guard and redis.call('GET', guard) == id then
            redis.call('SET', guard, entry, 'KEEPTTL')
        end
        out[#out + 1] = id
        out[#out + 1] = entry
    end
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
    out[2] = tonumber(first[2])
end
return out
"""
)

# KEYS: stream, delayed, jobs, unique_of.  ARGV: delayed ids.  Returns the ids removed; a unique
# job's guard goes with it, so that the same job can be published again at once.
CANCEL = """
local removed = {}
for _, id in ipairs(ARGV) do
    if redis.call('ZREM', KEYS[2], id) == 1 then
        local unique = redis.call('HGET', KEYS[4], id)
        if unique then
            local guard = string.match(unique, '^(.*)\\n%a+$')
            if guard and redis.call('GET', guard) == id then
                redis.call('DEL', guard)
            end
        end
        redis.call('HDEL', KEYS[3], id)
        redis.call('HDEL', KEYS[4], id)
        removed[#removed + 1] = id
    end
end
return removed
"""

# KEYS: S:dead, S, S:maxlen. ARGV: the dead letter's id, the guard's time to live in ms. The letter is
# taken out of the dead letters and its payload added to the stream as one step, and only by the
# caller that removed it: two operators replaying at once, or a replay killed and run again, run each
# job once. A unique job's letter names its guard (``unique``): the job is added again holding it, as
# a publish would (until processed, for at most the time to live), and not at all while another job
# of its key holds it (the letter stays). Returns the new entry's id; false when the letter is gone
# (replayed or purged meanwhile); {guard key, holder's id} when the key is held. The stream is
# trimmed as MOVE trims it.
REPLAY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
    return false
end
local fields, payload, guard, original = found[1][2], '', nil, nil
for i = 1, #fields, 2 do
    if fields[i] == 'payload' then
        payload = fields[i + 1]
    elseif fields[i] == 'unique' then
        guard = fields[i + 1]
    elseif fields[i] == 'id' then
        original = fields[i + 1]
    end
end
local add = {'XADD', KEYS[2]}
if guard then
    if string.sub(guard, 1, #KEYS[2] + 8) ~= KEYS[2] .. ':unique:' then
        return redis.error_reply('ERR the dead letter names a guard of another stream: ' .. guard)
    end
    local held = redis.call('GET', guard)
    -- Held by the dead job itself (its daemon died between the dead letter and the release): free.
    if held and held ~= original then
        return {guard, held}
    end
end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
    return false
end
local maxlen = redis.call('GET', KEYS[3])
if maxlen then
    add[#add + 1] = 'MAXLEN'
    add[#add + 1] = '~'
    add[#add + 1] = maxlen
end
add[#add + 1] = '*'
add[#add + 1] = 'payload'
add[#add + 1] = payload
if guard then
    add[#add + 1] = 'unique'
    add[#add + 1] = guard
end
local id = redis.call(unpack(add))
if guard then
    redis.call('SET', guard, id, 'PX', ARGV[2])
end
return id
"""

# KEYS: the guard.  ARGV: the entry id.  Release the guard only if this entry still holds it:
# after it expired another job may have taken it.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: the bucket.  ARGV: tokens per ms, burst, count (below 0: tokens given back unused).
# Returns {tokens granted, ms until the next whole token (0: one is there)}. One bucket for all
# daemons on this Redis, filled by Redis's clock.
TAKE = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""
    + """
local rate, burst, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or burst
local at = tonumber(bucket[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = 0
if count < 0 then
    tokens = math.min(burst, tokens - count)
else
    granted = math.min(count, math.floor(tokens))
    tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
local wait = 0
if tokens < 1 then
    wait = math.ceil((1 - tokens) / rate)
end
return {granted, wait}
"""
)


@dataclass(frozen=True, slots=True)
class Added:
    added: bool  # False: a job holding the unique key's guard was found, and nothing was added
    id: str  # the entry id, "d<n>" for a delayed job; when not added, the holder's
    due_ms: int  # -1 when not delayed


@dataclass(frozen=True, slots=True)
class Moved:
    now_ms: int  # Redis's clock when the script ran
    next_due_ms: int  # -1: none waiting
    ids: list[tuple[str, str]]  # (delayed id, entry id)

    @property
    def next_due_in(self) -> float:
        """Seconds from the move to the next due job; ``inf`` if none."""
        return float("inf") if self.next_due_ms < 0 else max(0.0, (self.next_due_ms - self.now_ms) / 1000)


@dataclass(frozen=True, slots=True)
class Taken:
    granted: int
    wait: float  # seconds until the next whole token


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def added(reply: Any) -> Added:
    return Added(bool(reply[0]), _text(reply[1]), int(reply[2]))


def moved(reply: Any) -> Moved:
    flat = [_text(v) for v in reply[2:]]
    return Moved(int(reply[0]), int(reply[1]), list(zip(flat[::2], flat[1::2], strict=True)))


def taken(reply: Any) -> Taken:
    return Taken(int(reply[0]), int(reply[1]) / 1000)
