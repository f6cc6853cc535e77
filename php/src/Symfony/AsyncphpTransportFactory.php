<?php

declare(strict_types=1);

namespace Asyncphp\Symfony;

use Asyncphp\AsyncphpException;
use Symfony\Component\Messenger\Transport\Serialization\SerializerInterface;
use Symfony\Component\Messenger\Transport\TransportFactoryInterface;
use Symfony\Component\Messenger\Transport\TransportInterface;

/**
 * Makes a transport of `asyncphp://` DSNs (messenger.yaml), registered by AsyncphpBundle:
 *
 *     asyncphp://[password@]host[:port]/<stream>[?dbindex=0&group=asyncphp&timeout=2]
 *     asyncphp:///run/redis.sock?stream=<stream>
 *
 * The stream is the path, URL-encoded (`%7Bjobs%7Dhigh` for `{jobs}high`), or the option
 * `stream`; without either, `symfony:` and the transport's name. Options may also be given as the
 * transport's `options`.
 */
final class AsyncphpTransportFactory implements TransportFactoryInterface
{
    /** @param array<string, mixed> $options */
    public function createTransport(string $dsn, array $options, SerializerInterface $serializer): TransportInterface
    {
        $parts = parse_url($dsn);
        if ($parts === false || ($parts['scheme'] ?? '') !== 'asyncphp') {
            throw new AsyncphpException("not an asyncphp:// DSN: '$dsn'");
        }
        parse_str($parts['query'] ?? '', $query);
        $options = $query + $options;
        $name = (string) ($options['transport_name'] ?? 'async');
        $path = rawurldecode(ltrim($parts['path'] ?? '', '/'));
        $socket = isset($parts['host']) ? null : '/' . $path;
        $stream = (string) ($options['stream'] ?? ($socket === null && $path !== '' ? $path : "symfony:$name"));
        $password = isset($parts['user']) ? rawurldecode($parts['user']) : null;
        $redis = static function () use ($parts, $socket, $options, $password): \Redis {
            $redis = new \Redis();
            $timeout = (float) ($options['timeout'] ?? 2.0);
            $connected = $socket !== null
                ? $redis->connect($socket, 0, $timeout)
                : $redis->connect((string) $parts['host'], (int) ($parts['port'] ?? 6379), $timeout);
            if (!$connected) {
                throw new AsyncphpException('redis: cannot connect for the asyncphp transport');
            }
            if ($password !== null && $password !== '') {
                $redis->auth($password);
            }
            if (isset($options['dbindex'])) {
                $redis->select((int) $options['dbindex']);
            }
            return $redis;
        };
        return new AsyncphpTransport($redis, $stream, $name, $serializer, (string) ($options['group'] ?? 'asyncphp'));
    }

    /** @param array<string, mixed> $options */
    public function supports(string $dsn, array $options): bool
    {
        return str_starts_with($dsn, 'asyncphp://');
    }
}
