<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * The four Redis commands the client sends. Adapters exist for phpredis and Predis
 * (Client::connection() picks one); any other client can implement this.
 */
interface Connection
{
    /** PUBLISH: the number of subscribers that received the message. */
    public function publish(string $channel, string $message): int;

    /**
     * XADD <stream> MAXLEN ~ <maxlen> * <field> <value>…: the new entry's id.
     *
     * @param array<string, string> $fields
     */
    public function xadd(string $stream, array $fields, int $maxlen): string;

    /**
     * EVALSHA, and on NOSCRIPT, SCRIPT LOAD and EVALSHA again (as redis-py's Script does).
     *
     * @param list<string> $keys
     * @param list<string|int> $args
     */
    public function script(string $script, array $keys, array $args): mixed;
}
