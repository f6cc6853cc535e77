<?php

declare(strict_types=1);

namespace Asyncphp;

use Predis\ClientInterface;
use Predis\PredisException;

/** Connection over a Predis client (1.1 or later), in raw commands: the same bytes as phpredis sends. */
final class PredisConnection implements Connection
{
    public function __construct(private readonly ClientInterface $redis)
    {
    }

    public function publish(string $channel, string $message): int
    {
        return (int) $this->call(['PUBLISH', $channel, $message]);
    }

    /** @internal SPUBLISH, for PredisClusterConnection */
    public function spublish(string $channel, string $message): int
    {
        return (int) $this->call(['SPUBLISH', $channel, $message]);
    }

    public function xadd(string $stream, array $fields, int $maxlen): string
    {
        $command = ['XADD', $stream, 'MAXLEN', '~', (string) $maxlen, '*'];
        foreach ($fields as $field => $value) {
            array_push($command, $field, $value);
        }
        return (string) $this->call($command);
    }

    /** @param bool $loadByEval on NOSCRIPT, EVAL instead of SCRIPT LOAD and EVALSHA (a cluster has no node to load on) */
    public function script(string $script, array $keys, array $args, bool $loadByEval = false): mixed
    {
        $evalsha = ['EVALSHA', sha1($script), (string) count($keys), ...array_map('strval', [...$keys, ...$args])];
        [$reply, $error] = $this->raw($evalsha);
        if ($error && str_starts_with((string) $reply, 'NOSCRIPT')) {
            if ($loadByEval) {
                return $this->call(['EVAL', $script, ...array_slice($evalsha, 2)]);
            }
            $this->call(['SCRIPT', 'LOAD', $script]);
            return $this->call($evalsha);
        }
        if ($error) {
            throw new AsyncphpException("redis refused EVALSHA: $reply");
        }
        return $reply;
    }

    /** @param list<string> $command */
    private function call(array $command): mixed
    {
        [$reply, $error] = $this->raw($command);
        if ($error) {
            throw new AsyncphpException("redis refused {$command[0]}: $reply");
        }
        return $reply;
    }

    /**
     * @param list<string> $command
     * @return array{mixed, bool} the reply, and whether it is an error reply (then its text)
     */
    private function raw(array $command): array
    {
        try {
            $error = false;
            $reply = $this->redis->executeRaw($command, $error);
        } catch (PredisException $e) {
            throw new AsyncphpException("redis: {$command[0]} failed: " . $e->getMessage(), 0, $e);
        }
        return [$reply, (bool) $error];
    }
}
