<?php

declare(strict_types=1);

namespace Asyncphp\Laravel;

use Asyncphp\AsyncphpException;
use Asyncphp\Client;
use Illuminate\Contracts\Queue\Queue;
use Illuminate\Contracts\Redis\Factory as Redis;
use Illuminate\Queue\Connectors\ConnectorInterface;
use Predis\ClientInterface;

/**
 * Makes the `asyncphp` queue connection from its config/queue.php entry:
 *
 *     'asyncphp' => [
 *         'driver' => 'asyncphp',
 *         'connection' => 'default',         // the Redis connection (config/database.php), a cluster too
 *         'queue' => 'default',              // the default queue
 *         'prefix' => 'laravel:',            // a queue's stream is prefix . queue (on a cluster: '{laravel}:')
 *         'streams' => ['high' => 'mail'],   // or named one by one
 *         'group' => 'asyncphp',             // the daemons' consumer group (size())
 *         'after_commit' => false,
 *         'tries' => 1, 'backoff' => 0,      // as queue:work's --tries and --backoff
 *         'maintenance_delay' => 10,         // seconds between a job's tries while the app is down
 *     ],
 */
final class AsyncphpConnector implements ConnectorInterface
{
    public function __construct(private readonly Redis $redis)
    {
    }

    /** @param array<string, mixed> $config */
    public function connect(array $config): Queue
    {
        $client = $this->redis->connection($config['connection'] ?? null)->client();
        if (!$client instanceof \Redis && !$client instanceof \RedisCluster && !$client instanceof ClientInterface) {
            throw new AsyncphpException(
                'the asyncphp queue needs a phpredis or Predis connection, not ' . get_debug_type($client)
            );
        }
        $connection = Client::connection($client);
        return new AsyncphpQueue(
            new Client($connection),
            $connection,
            (string) ($config['queue'] ?? 'default'),
            (array) ($config['streams'] ?? []),
            (string) ($config['prefix'] ?? 'laravel:'),
            (string) ($config['group'] ?? 'asyncphp'),
            (bool) ($config['after_commit'] ?? false),
        );
    }
}
