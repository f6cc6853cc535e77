<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * The Lua script that adds a job to a stream: at once, or delayed, with or without a unique
 * guard. The same text as the daemon's own (src/asyncphp/wire/scripts.py, ADD), so that one
 * script (by its SHA1) serves Python and PHP publishers alike; a test holds the two equal.
 *
 * KEYS: stream, <stream>:delayed, <stream>:delayed:jobs, <stream>:delayed:unique,
 *       <stream>:maxlen, <stream>:delayed:seq, <stream>:unique:<key>.
 * ARGV: payload, maxlen, delay ms (-1: none), at ms (-1: none), unique key ('': none),
 *       unique_for ms, 'processed' | 'expiry'.
 * Returns {added (1/0), id, due ms (-1: none)}.
 */
final class Scripts
{
    public const ADD = <<<'EOT'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

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
        redis.call('HSET', KEYS[4], id, KEYS[7] .. '\n' .. ARGV[7])
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

EOT;
}
