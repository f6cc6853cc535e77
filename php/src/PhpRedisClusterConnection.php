<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * Connection over a phpredis \RedisCluster (Laravel's phpredis cluster connection is one). Each
 * command goes to the primary of its key's slot; phpredis follows MOVED and failovers.
 *
 * Pub/sub is sharded by default, as the daemon reads it on a cluster (SPUBLISH to the shard of
 * the channel's slot); $sharded = false for a daemon whose URL says ?pubsub=classic.
 */
final class PhpRedisClusterConnection implements ClusterConnection
{
    private readonly PhpRedisConnection $plain;

    public function __construct(\RedisCluster $redis, private readonly bool $sharded = true)
    {
        $this->plain = new PhpRedisConnection($redis);
    }

    public function publish(string $channel, string $message): int
    {
        return $this->sharded ? $this->plain->spublish($channel, $message) : $this->plain->publish($channel, $message);
    }

    public function xadd(string $stream, array $fields, int $maxlen): string
    {
        return $this->plain->xadd($stream, $fields, $maxlen);
    }

    public function script(string $script, array $keys, array $args): mixed
    {
        return $this->plain->script($script, $keys, $args);
    }
}
