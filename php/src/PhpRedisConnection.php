<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * Connection over a connected phpredis \Redis (or \RedisCluster, for PhpRedisClusterConnection).
 * The app's key prefix, serializer and compression (OPT_PREFIX, OPT_SERIALIZER, OPT_COMPRESSION, as
 * Laravel sets them) are set aside for each command and put back after: the daemon reads the stream
 * and the JSON by their own names and bytes.
 */
final class PhpRedisConnection implements Connection
{
    public function __construct(private readonly \Redis|\RedisCluster $redis)
    {
    }

    public function publish(string $channel, string $message): int
    {
        return (int) $this->call(fn () => $this->redis->publish($channel, $message), 'PUBLISH');
    }

    /** @internal SPUBLISH (phpredis 5 has no method for it), for PhpRedisClusterConnection */
    public function spublish(string $channel, string $message): int
    {
        $redis = $this->redis;
        $command = $redis instanceof \RedisCluster
            ? fn () => $redis->rawCommand($channel, 'SPUBLISH', $channel, $message)
            : fn () => $redis->rawCommand('SPUBLISH', $channel, $message);
        return (int) $this->call($command, 'SPUBLISH');
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
            $redis = $this->redis;
            // On a cluster, to the node of the script's first key, where EVALSHA runs it.
            $load = $redis instanceof \RedisCluster
                ? fn () => $redis->script($keys[0] ?? '', 'load', $script)
                : fn () => $redis->script('load', $script);
            $this->call($load, 'SCRIPT LOAD');
            $reply = $this->call(fn () => $this->redis->evalSha($sha, $values, count($keys)), 'EVALSHA');
        }
        return $reply;
    }

    /** phpredis answers an error reply with false (and getLastError()), a lost connection with an exception. */
    private function call(callable $command, string $name, bool $noScriptIsAnswer = false): mixed
    {
        try {
            if ($this->redis->getMode() !== \Redis::ATOMIC) {
                throw new AsyncphpException(
                    "cannot $name: the connection is in MULTI or pipeline mode; publish outside it"
                );
            }
            $reply = self::withoutOptions($this->redis, $command);
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

    /** Runs $command with no prefix, serializer or compression, then restores them. */
    private static function withoutOptions(\Redis|\RedisCluster $redis, callable $command): mixed
    {
        $options = [\Redis::OPT_PREFIX => '', \Redis::OPT_SERIALIZER => \Redis::SERIALIZER_NONE];
        if (defined('Redis::OPT_COMPRESSION')) {
            $options[\Redis::OPT_COMPRESSION] = \Redis::COMPRESSION_NONE;
        }
        $saved = [];
        foreach ($options as $option => $plain) {
            $current = $redis->getOption($option);
            if ($current !== $plain && !($option === \Redis::OPT_PREFIX && ($current === null || $current === false))) {
                $saved[$option] = $current;
                $redis->setOption($option, $plain);
            }
        }
        try {
            return $command();
        } finally {
            foreach ($saved as $option => $value) {
                $redis->setOption($option, $value);
            }
        }
    }
}
