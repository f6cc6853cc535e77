<?php

declare(strict_types=1);

namespace Asyncphp;

use Predis\ClientInterface;
use Predis\Command\CommandInterface;
use Predis\Connection\Aggregate\ClusterInterface;

/**
 * Connection over a Predis client made for a Redis Cluster (['cluster' => 'redis'], as Laravel's
 * Predis cluster connections are). Each command goes to the primary of its key's slot; Predis
 * follows MOVED.
 *
 * Predis 1.1 routes neither XADD nor (S)PUBLISH on a cluster, and SCRIPT LOAD has no key to route
 * by: the first two are routed by their first argument here, and a script the node lacks is sent
 * once with EVAL (which caches it there) instead of SCRIPT LOAD. Pub/sub is sharded by default, as
 * the daemon reads it on a cluster; $sharded = false for a daemon whose URL says ?pubsub=classic.
 */
final class PredisClusterConnection implements ClusterConnection
{
    private const ROUTED_BY_FIRST_ARGUMENT = ['XADD', 'PUBLISH', 'SPUBLISH'];

    private readonly PredisConnection $plain;

    public function __construct(private readonly ClientInterface $redis, private readonly bool $sharded = true)
    {
        $cluster = $redis->getConnection();
        if (!$cluster instanceof ClusterInterface || !method_exists($cluster, 'getClusterStrategy')) {
            throw new AsyncphpException(
                'not a Predis cluster client: make it with the option cluster => redis, or use PredisConnection'
            );
        }
        $strategy = $cluster->getClusterStrategy();
        foreach (self::ROUTED_BY_FIRST_ARGUMENT as $command) {
            $strategy->setCommandHandler($command, static fn (CommandInterface $c): mixed => $c->getArgument(0));
        }
        $this->plain = new PredisConnection($redis);
    }

    /** Whether $redis is a Predis client made for a Redis Cluster. */
    public static function serves(ClientInterface $redis): bool
    {
        return $redis->getConnection() instanceof ClusterInterface;
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
        return $this->plain->script($script, $keys, $args, loadByEval: true);
    }
}
