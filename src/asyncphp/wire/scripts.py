"""Every Lua script the daemon, the caller and the operator tools run in Redis (pure).

Each runs atomically in Redis, so that a publisher, any number of daemons and an operator's
command can act on the same keys at once without a lock. Times are Redis's own (``TIME``):
publishers and daemons on other hosts never need their clocks to agree.

The keys they use are named in ``asyncphp.wire.keys``.

A delayed job becomes a stream entry with the fields ``payload``, ``due_at`` (seconds since the
epoch, to the ms) and ``delayed_id``; a unique one held until processed also has ``unique`` (its
guard's key), which the daemon releases when it acknowledges or dead-letters the entry; one its
worker asked to run again later (LATER) also has ``attempts`` (its lineage's runs so far) and
``first_id`` (the entry its lineage began with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MAXLEN = 1_000_000  # entries a stream keeps, approximately (XADD MAXLEN ~)
MOVE_BATCH = 500  # delayed jobs moved by one run of MOVE: a few ms of Redis at most


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

# KEYS: stream, delayed, jobs, unique_of, maxlen, lineage (Keys.moving).  ARGV: batch, then delayed ids to
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
        local lineage = redis.call('HGET', KEYS[6], id)
        if lineage then
            local attempts, first = string.match(lineage, '^(%d+)\\n(.*)$')
            if attempts then
                table.insert(fields, 'attempts')
                table.insert(fields, attempts)
                table.insert(fields, 'first_id')
                table.insert(fields, first)
            end
        end
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
        redis.call('HDEL', KEYS[6], id)
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

# KEYS: stream, delayed, jobs, unique_of, maxlen, lineage (Keys.moving).  ARGV: delayed ids.
# Returns the ids removed; a unique job's guard goes with it, so that the same job can be published
# again at once.
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
        redis.call('HDEL', KEYS[6], id)
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


# The settles of stream entries, and the group's recorded position.

# KEYS: <stream>:groups. ARGV: group, id. Records an id only if it is newer than the one there:
# several daemons write it.
POSITION = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
    local oms, oseq = string.match(old, '^(%d+)-(%d+)$')
    local nms, nseq = string.match(ARGV[2], '^(%d+)-(%d+)$')
    if oms and (tonumber(oms) > tonumber(nms) or (oms == nms and tonumber(oseq) >= tonumber(nseq))) then
        return 0
    end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Who holds an entry, as the settle scripts below ask it (KEYS[1]: the stream, ARGV[1]: the group):
# pending for ``consumer``, or for anyone. One definition, so that every script that must not act on
# an entry another consumer claimed decides it the same way.
_HOLDER = """
local function holds(consumer, id)
    return #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, consumer) > 0
end
local function pending(id)
    return #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) > 0
end
"""

# The dead letter and the acknowledgement in one step, so they cannot come apart: if the XADD is
# refused (WRONGTYPE, OOM, an ACL), the script stops before the XACK and the entry stays pending.
# A resend (its first try was lost with a connection, and may have run) writes only if the entry
# is still pending for this consumer.
# KEYS: the stream, its dead letters. ARGV: group, entry id, consumer, resent (1/0), the dead letters'
# MAXLEN, the dead letter's fields. Returns the dead letter's id, or false when another consumer holds
# the entry (it is theirs to settle). See ledger.Bury for why each case is decided so.
BURY = (
    _HOLDER
    + """
if not holds(ARGV[3], ARGV[2]) then
    if pending(ARGV[2]) then
        return false
    end
    if ARGV[4] == '1' then
        for _, letter in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 64)) do
            local f, id, daemon = letter[2], nil, nil
            for i = 1, #f, 2 do
                if f[i] == 'id' then id = f[i + 1] elseif f[i] == 'daemon' then daemon = f[i + 1] end
            end
            if id == ARGV[2] and daemon == ARGV[3] then
                return letter[1]
            end
        end
    end
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
"""
)


# A job its worker asked to run again later, put back through the delayed set and acknowledged as one
# step, so that it is never both pending and delayed, nor neither. The delayed job carries its
# lineage (attempts so far, the first entry's id) and a unique job's guard, which moves to it.
# KEYS: Keys.later (stream, delayed, jobs, unique_of, seq, lineage). ARGV: group, entry id, consumer,
# resent (1; 2: claimed away meanwhile; 0), delay ms, payload, attempts so far, first entry id, the
# guard's key ('': none).
# Returns the delayed job's id, or '' for an entry pending for nobody that needs none: claimed away
# (2: whoever claimed it settled it, and a copy would run it twice), or resent (1) when a delayed job
# of its lineage's next run is there (the first send applied: attempts and first id tell the runs of
# one lineage apart, and only one of them is ever delayed). False when another consumer holds the
# entry (theirs to settle). Pending for nobody otherwise (its group re-created, the first send lost),
# it is put back: at least once, never lost. See ledger.Later.
LATER = (
    _HOLDER
    + _NOW
    + """
local lineage = ARGV[7] .. '\\n' .. ARGV[8]
if not holds(ARGV[3], ARGV[2]) then
    if pending(ARGV[2]) then
        return false
    end
    if ARGV[4] == '2' then
        return ''
    end
    if ARGV[4] == '1' then
        for _, held in ipairs(redis.call('HVALS', KEYS[6])) do
            if held == lineage then
                return ''
            end
        end
    end
end
local due = now + tonumber(ARGV[5])
local id = 'd' .. redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[2], due, id)
redis.call('HSET', KEYS[3], id, ARGV[6])
redis.call('HSET', KEYS[6], id, lineage)
if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[4], id, ARGV[9] .. '\\nprocessed')
    if redis.call('GET', ARGV[9]) == ARGV[2] then
        redis.call('SET', ARGV[9], id, 'KEEPTTL')
    end
end
if redis.call('ZRANGE', KEYS[2], 0, 0)[1] == id then
    redis.pcall('PUBLISH', KEYS[2], due - now)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
"""
)


# KEYS: the stream. ARGV: group, consumer, entry ids. Resets the idle time of the entries still pending
# for this consumer, so that nobody claims them from a live one; not of those another consumer claimed
# meanwhile (this daemon looked dead, stopped or cut off, for claim_idle): XCLAIM would take them back
# while the other's copy runs, and the settle of the wrong copy would release a unique job's guard.
# Returns the ids no longer this consumer's.
TOUCH = (
    _HOLDER
    + """
local gone = {}
for i = 3, #ARGV do
    if holds(ARGV[2], ARGV[i]) then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
        gone[#gone + 1] = ARGV[i]
    end
end
return gone
"""
)


# KEYS: the stream. ARGV: group, consumer, entry id, its delivery count. Counts a retry's delivery
# (XCLAIM … RETRYCOUNT) only if the entry is still this consumer's: one another consumer claimed
# meanwhile is its to run (XCLAIM would take it back, and both copies would run). Returns the id in a
# list when counted, an empty list when not (see Ledger.redelivered).
REDELIVER = (
    _HOLDER
    + """
if not holds(ARGV[2], ARGV[3]) then
    return {}
end
return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID', 'RETRYCOUNT', ARGV[4])
"""
)


# KEYS: the stream. ARGV: group, entry id, consumer. Acknowledges a unique job's entry unless another
# consumer holds it (see ledger.AckHeld): 1 when acknowledged (or pending for nobody), 0 when not.
ACK_HELD = (
    _HOLDER
    + """
if not holds(ARGV[3], ARGV[2]) and pending(ARGV[2]) then
    return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)


# KEYS: the stream. ARGV: group, this consumer, idle ms. Removes the group's other consumers that hold
# nothing and have not read for the idle time (see ledger.PRUNE_IDLE). Returns their names.
PRUNE = """
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local info = {}
    for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
    if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] >= tonumber(ARGV[3]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
        removed[#removed + 1] = info['name']
    end
end
return removed
"""


# KEYS: the stream. ARGV: group, consumer. A consumer that leaves holding nothing is removed from
# the group, so that restarts (each a new <hostname>-<pid>) do not pile consumers up; one that holds
# entries stays, for them to be claimed.
LEAVE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return false
"""


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
