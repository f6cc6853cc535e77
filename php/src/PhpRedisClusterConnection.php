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
    public function __construct(private readonly \RedisCluster $redis, private readonly bool $sharded = true)
    {
    }

    public function publish(string $channel, string $message): int
    {
        return (int) $this->call(
            fn () => $this->sharded
                ? $this->redis->rawCommand($channel, 'SPUBLISH', $channel, $message)
                : $this->redis->publish($channel, $message),
            $this->sharded ? 'SPUBLISH' : 'PUBLISH',
        );
    }

    public function xadd(string $stream, array $fields, int $maxlen): string
    {
        return (string) $this->call(fn () => $this->redis->xAdd($stream, '*', $fields, $maxlen, true), 'XADD');
    }

    public function script(string $script, array $keys, array $args): mixed
    {
        $sha = sha1($script);
        $values = array_merge($keys, $args);
        $this->redis->clearLastError();
        $reply = $this->call(fn () => $this->redis->evalSha($sha, $values, count($keys)), 'EVALSHA', true);
        if ($reply === false && str_starts_with((string) $this->redis->getLastError(), 'NOSCRIPT')) {
            $this->redis->clearLastError();
            // SCRIPT LOAD goes to the node of the script's first key, where EVALSHA runs it.
            $this->call(fn () => $this->redis->script($keys[0] ?? '', 'load', $script), 'SCRIPT LOAD');
            $reply = $this->call(fn () => $this->redis->evalSha($sha, $values, count($keys)), 'EVALSHA');
        }
        return $reply;
    }

    private function call(callable $command, string $name, bool $noScriptIsAnswer = false): mixed
    {
        try {
            if ($this->redis->getMode() !== \RedisCluster::ATOMIC) {
                throw new AsyncphpException(
                    "cannot $name: the connection is in MULTI or pipeline mode; publish outside it"
                );
            }
            $reply = PhpRedisConnection::withoutOptions($this->redis, $command);
        } catch (\RedisException | \RedisClusterException $e) {
            throw new AsyncphpException("redis: $name failed: " . $e->getMessage(), 0, $e);
        }
        if ($reply === false) {
            $error = (string) $this->redis->getLastError();
            if ($error !== '' && !($noScriptIsAnswer && str_starts_with($error, 'NOSCRIPT'))) {
                throw new AsyncphpException("redis refused $name: $error");
            }
        }
        return $reply;
    }
}
