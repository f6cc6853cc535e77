<?php

declare(strict_types=1);

namespace Asyncphp;

use Predis\ClientInterface;

/**
 * Publishes jobs for the asyncphp daemon, over the app's own Redis connection.
 *
 *     $jobs = new Asyncphp\Client($redis);                 // a connected \Redis or \RedisCluster (phpredis), or Predis
 *     $jobs->publish(['user' => 42]);                      // pub/sub: subscribers reached (0: dropped)
 *     $jobs->stream('mail')->publish(['user' => 42]);      // durable: the entry id
 *     $jobs->stream('mail')->delay(30)->unique('welcome:42', 600)->publish(['user' => 42]);
 *
 * What it writes to Redis is what the Python caller writes for the same call, byte for byte.
 */
final class Client
{
    public const DEFAULT_CHANNEL = 'commands';
    public const DEFAULT_MAXLEN = 1_000_000;

    private readonly Connection $redis;
    private readonly string $release;

    /**
     * @param bool $throwWhenDropped publish() throws instead of returning 0 when nobody received
     *     the message (pub/sub keeps nothing: it is lost)
     * @param ?string $release the release publishing, for daemons that run each job with its
     *     release's code (default: the environment's ASYNCPHP_RELEASE)
     */
    public function __construct(
        \Redis|\RedisCluster|ClientInterface|Connection $redis,
        private readonly Limits $limits = new Limits(),
        private readonly bool $throwWhenDropped = false,
        private readonly int $maxlen = self::DEFAULT_MAXLEN,
        ?string $release = null,
    ) {
        $this->release = $release ?? (string) getenv('ASYNCPHP_RELEASE');
        $this->redis = self::connection($redis);
    }

    /**
     * The Connection for an app's Redis client: phpredis's \Redis or \RedisCluster, a Predis
     * client (one made for a cluster too), or a Connection of the app's own.
     *
     * @param bool $sharded on a cluster, publish with SPUBLISH, as the daemon reads there by default
     *     (false: PUBLISH, for a daemon whose URL says ?pubsub=classic)
     */
    public static function connection(
        \Redis|\RedisCluster|ClientInterface|Connection $redis,
        bool $sharded = true,
    ): Connection {
        return match (true) {
            $redis instanceof Connection => $redis,
            $redis instanceof \Redis => new PhpRedisConnection($redis),
            $redis instanceof \RedisCluster => new PhpRedisClusterConnection($redis, $sharded),
            PredisClusterConnection::serves($redis) => new PredisClusterConnection($redis, $sharded),
            default => new PredisConnection($redis),
        };
    }

    /**
     * Publish on a channel (pub/sub): the number of daemons that received it. Pub/sub keeps
     * nothing: 0 means nobody was subscribed and the job is gone (see $throwWhenDropped).
     *
     * @param array<mixed> $payload an associative array: the worker's $_POST
     * @param string $traceparent the W3C trace context the job continues, if any
     * @throws AsyncphpException
     */
    public function publish(
        array $payload,
        string $channel = self::DEFAULT_CHANNEL,
        string $traceparent = '',
        string $tracestate = '',
    ): int {
        $meta = ['release' => $this->release, 'traceparent' => $traceparent, 'tracestate' => $tracestate];
        $receivers = $this->redis->publish($channel, Payload::encode($payload, $this->limits, $meta));
        if ($receivers === 0 && $this->throwWhenDropped) {
            throw new AsyncphpException("nobody is subscribed to '$channel': the message was dropped");
        }
        return $receivers;
    }

    /**
     * A publisher for the stream $name (the durable mode: kept in Redis until a worker answered).
     *
     * @throws AsyncphpException on a Redis Cluster, a name without a hash tag ({mail}, mail{0})
     */
    public function stream(string $name = self::DEFAULT_CHANNEL): StreamPublisher
    {
        if ($this->redis instanceof ClusterConnection) {
            HashTag::require($name);
        }
        return (new StreamPublisher($this->redis, $name, $this->limits, $this->maxlen))->release($this->release);
    }
}
