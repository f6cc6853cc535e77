<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * A stream's jobs by state, for the framework queues' counts (Laravel's size(), Messenger's
 * getMessageCount()): delayed, waiting (not yet read by the daemons' group), reserved (read:
 * running, or waiting for a retry), and the oldest waiting entry's id.
 */
final class QueueSizes
{
    /** KEYS: the stream, its delayed set. ARGV: the daemons' consumer group. */
    private const SCRIPT = <<<'EOT'
local delayed = redis.call('ZCARD', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {delayed, 0, 0, ''}
end
local function oldest(after)
    local first = redis.call('XRANGE', KEYS[1], after, '+', 'COUNT', 1)[1]
    return first and first[1] or ''
end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == ARGV[1] then
        local lag = info['lag']
        if not lag then
            -- Redis cannot tell (before 7.0, or after a deletion): every entry may be unread.
            lag = redis.call('XLEN', KEYS[1])
        end
        return {delayed, lag, info['pending'], oldest('(' .. info['last-delivered-id'])}
    end
end
return {delayed, redis.call('XLEN', KEYS[1]), 0, oldest('-')}
EOT;

    /** @return array{int, int, int, string} delayed, waiting, reserved, the oldest waiting entry's id ('': none) */
    public static function of(Connection $redis, string $stream, string $group): array
    {
        $reply = (array) $redis->script(self::SCRIPT, [$stream, $stream . ':delayed'], [$group]);
        return [(int) ($reply[0] ?? 0), (int) ($reply[1] ?? 0), (int) ($reply[2] ?? 0), (string) ($reply[3] ?? '')];
    }
}
