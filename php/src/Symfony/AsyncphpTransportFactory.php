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
 *     asyncphp://[[user:]password@]host[:port]/<stream>[?dbindex=0&group=asyncphp&timeout=2]
 *     asyncphp:///run/redis.sock?stream=<stream>&password=…
 *
 * The stream is the path (a hash tag as it is: `{jobs}high`; `%` would be read as a container
 * parameter), else the option `stream`, else `symfony:` and the transport's name. Options may be
 * given as the transport's `options` too, which win over the query; an unknown one is refused.
 */
final class AsyncphpTransportFactory implements TransportFactoryInterface
{
    private const OPTIONS = ['stream', 'group', 'dbindex', 'timeout', 'password'];

    /** @param array<string, mixed> $options */
    public function createTransport(string $dsn, array $options, SerializerInterface $serializer): TransportInterface
    {
        if (!$this->supports($dsn, $options)) {
            throw new AsyncphpException("not an asyncphp:// DSN: '$dsn'");
        }
        [$rest, $queryString] = explode('?', substr($dsn, strlen('asyncphp://')), 2) + [1 => ''];
        parse_str($queryString, $query);
        unset($query['transport_name']); // Symfony's to give: every message carries it
        $options += $query; // the transport's options win over the DSN's query
        $name = (string) ($options['transport_name'] ?? 'async');
        $unknown = array_diff(array_keys($options), ['transport_name', ...self::OPTIONS]);
        if ($unknown !== []) {
            throw new AsyncphpException(
                "the asyncphp transport '$name' has no option " . implode(', ', $unknown)
                . ' (it takes ' . implode(', ', self::OPTIONS) . ')'
            );
        }
        $socket = null;
        $host = '';
        $port = 6379;
        $path = '';
        $credentials = isset($options['password']) ? [(string) $options['password']] : [];
        if (str_starts_with($rest, '/')) {
            $socket = $rest; // asyncphp:///run/redis.sock?stream=…
        } else {
            [$authority, $path] = explode('/', $rest, 2) + [1 => ''];
            if (str_contains($authority, '@')) {
                $at = strrpos($authority, '@');
                $userInfo = array_map('rawurldecode', explode(':', substr($authority, 0, (int) $at), 2));
                $credentials = array_values(array_filter($userInfo, fn (string $part) => $part !== ''));
                $authority = substr($authority, (int) $at + 1);
            }
            [$host, $portText] = explode(':', $authority, 2) + [1 => '6379'];
            $port = (int) $portText;
        }
        // The path wins (as Symfony's Redis transport has it); a raw {tag} is fine in it.
        $stream = $path !== '' ? rawurldecode($path) : (string) ($options['stream'] ?? "symfony:$name");
        $redis = static function () use ($socket, $host, $port, $options, $credentials): \Redis {
            $redis = new \Redis();
            $timeout = (float) ($options['timeout'] ?? 2.0);
            $connected = $socket !== null
                ? $redis->connect($socket, 0, $timeout)
                : $redis->connect($host, $port, $timeout);
            if (!$connected) {
                throw new AsyncphpException('redis: cannot connect for the asyncphp transport');
            }
            // One part: a password; two: an ACL user and its password.
            if ($credentials !== [] && !$redis->auth(count($credentials) === 1 ? $credentials[0] : $credentials)) {
                throw new AsyncphpException('redis refused the transport\'s credentials: ' . $redis->getLastError());
            }
            if (isset($options['dbindex']) && !$redis->select((int) $options['dbindex'])) {
                throw new AsyncphpException("redis refused database {$options['dbindex']}: " . $redis->getLastError());
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
