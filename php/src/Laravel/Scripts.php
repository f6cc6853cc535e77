<?php

declare(strict_types=1);

namespace Asyncphp\Laravel;

/** The Lua scripts the Laravel connection runs. */
final class Scripts
{
    /**
     * A queue's size, as Laravel counts it (waiting, reserved and delayed jobs).
     * KEYS: the stream, its delayed set. ARGV: the daemons' consumer group.
     */
    public const SIZE = <<<'EOT'
local size = redis.call('ZCARD', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
    return size
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
        return size + lag + info['pending']
    end
end
return size + redis.call('XLEN', KEYS[1])
EOT;
}
