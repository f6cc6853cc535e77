<?php

declare(strict_types=1);

namespace Asyncphp;

/** A Redis Cluster key's hash tag, as Redis and the Python caller read it. */
final class HashTag
{
    /**
     * The text in $key's first {…} when it is not empty: what decides the key's slot. '' for a key
     * without one, which shares its slot with no key made from it.
     */
    public static function of(string $key): string
    {
        $start = strpos($key, '{');
        if ($start === false) {
            return '';
        }
        $end = strpos($key, '}', $start + 1);
        return $end === false || $end === $start + 1 ? '' : substr($key, $start + 1, $end - $start - 1);
    }

    /** @throws AsyncphpException on a cluster, a stream without a tag (the same words as the Python caller) */
    public static function require(string $stream): void
    {
        if (self::of($stream) === '') {
            throw new AsyncphpException(
                "on a cluster, stream '$stream' needs a hash tag, so that its dead letters, delayed jobs and "
                . "guards ($stream:dead…) share its slot and its scripts run on one shard: name it "
                . "{{$stream}}, or $stream{0}… for partitions"
            );
        }
    }
}
