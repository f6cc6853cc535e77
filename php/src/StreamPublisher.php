<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * Publishes to one stream (the durable mode). Immutable: each setter returns a new publisher, so
 * one can be kept and reused.
 *
 *     $client->stream('mail')->delay(30)->unique('welcome:42', 600)->publish(['user' => 42]);
 */
final class StreamPublisher
{
    /** Seconds (68 years): Redis refuses an expiry past its clock's range. */
    public const MAX_UNIQUE_FOR = 2 ** 31;
    /** Seconds (68 years): as the Python caller, so that both refuse the same delays. */
    public const MAX_DELAY = 2 ** 31;

    private ?int $delayMs = null;
    private ?int $atMs = null;
    private ?string $uniqueKey = null;
    private int $uniqueForMs = 3_600_000;
    private string $uniqueUntil = 'processed';
    /** @var array{release: string, traceparent: string, tracestate: string} */
    private array $meta = ['release' => '', 'traceparent' => '', 'tracestate' => ''];

    /** @internal made by Client::stream() */
    public function __construct(
        private readonly Connection $redis,
        private readonly string $stream,
        private readonly Limits $limits,
        private int $maxlen,
    ) {
        if ($stream === '') {
            throw new AsyncphpException('the stream name is empty');
        }
    }

    /** Run no sooner than $seconds from now (by Redis's clock). Replaces at(). */
    public function delay(int|float $seconds): self
    {
        if (!is_finite((float) $seconds) || $seconds < 0 || $seconds > self::MAX_DELAY) {
            throw new AsyncphpException("delay must be from 0 to " . self::MAX_DELAY . " seconds, not $seconds");
        }
        $copy = clone $this;
        $copy->delayMs = self::milliseconds($seconds);
        $copy->atMs = null;
        return $copy;
    }

    /** Run no sooner than $when; in the past, it runs now. Replaces delay(). */
    public function at(\DateTimeInterface $when): self
    {
        $copy = clone $this;
        $micro = (int) $when->format('U') * 1_000_000 + (int) $when->format('u');
        $copy->atMs = max(0, intdiv($micro + 500, 1000));
        $copy->delayMs = null;
        return $copy;
    }

    /**
     * Add only if no job with this key holds its guard; the guard holds for $for seconds, or
     * ($until = 'processed', the default) until the job is acknowledged or dead-lettered,
     * whichever comes first ('expiry': the whole $for).
     */
    public function unique(string $key, int|float $for = 3600, string $until = 'processed'): self
    {
        if ($key === '' || !is_finite((float) $for) || $for < 0.001 || $for > self::MAX_UNIQUE_FOR) {
            throw new AsyncphpException(
                'unique needs a non-empty key, and from 0.001 to ' . self::MAX_UNIQUE_FOR . ' seconds'
            );
        }
        if ($until !== 'processed' && $until !== 'expiry') {
            throw new AsyncphpException("unique's until must be 'processed' or 'expiry', not '$until'");
        }
        $copy = clone $this;
        $copy->uniqueKey = $key;
        $copy->uniqueForMs = self::milliseconds($for);
        $copy->uniqueUntil = $until;
        return $copy;
    }

    /** The release publishing (default: the Client's): a daemon may run each job with its release's code. */
    public function release(string $release): self
    {
        $copy = clone $this;
        $copy->meta['release'] = $release;
        return $copy;
    }

    /** The W3C trace context the job continues, as a web request would carry it. */
    public function trace(string $traceparent, string $tracestate = ''): self
    {
        $copy = clone $this;
        $copy->meta['traceparent'] = $traceparent;
        $copy->meta['tracestate'] = $tracestate;
        return $copy;
    }

    /** The stream is trimmed to about this many entries (default 1,000,000). */
    public function maxlen(int $entries): self
    {
        if ($entries < 1) {
            throw new AsyncphpException("maxlen must be 1 or more, not $entries");
        }
        $copy = clone $this;
        $copy->maxlen = $entries;
        return $copy;
    }

    /**
     * Add the job; returns its id (for a duplicate unique job, the first one's).
     *
     * @param array<mixed> $payload
     * @throws AsyncphpException
     */
    public function publish(array $payload): string
    {
        return $this->enqueue($payload)->id;
    }

    /**
     * Add the job; says whether it was added, and when it is due.
     *
     * @param array<mixed> $payload
     * @throws AsyncphpException
     */
    public function enqueue(array $payload): Enqueued
    {
        $json = Payload::encode($payload, $this->limits, $this->meta);
        if ($this->delayMs === null && $this->atMs === null && $this->uniqueKey === null) {
            return new Enqueued($this->redis->xadd($this->stream, ['payload' => $json], $this->maxlen), true, null);
        }
        $s = $this->stream;
        $key = $this->uniqueKey ?? '';
        $reply = $this->redis->script(
            Scripts::ADD,
            [$s, "$s:delayed", "$s:delayed:jobs", "$s:delayed:unique", "$s:maxlen", "$s:delayed:seq", "$s:unique:$key"],
            [
                $json, $this->maxlen, $this->delayMs ?? -1, $this->atMs ?? -1, $key, $this->uniqueForMs,
                $this->uniqueUntil,
            ],
        );
        if (!is_array($reply) || count($reply) !== 3) {
            throw new AsyncphpException('redis answered the add script unexpectedly: ' . var_export($reply, true));
        }
        [$added, $id, $dueMs] = $reply;
        $due = false;
        if ((int) $dueMs >= 0) {
            $text = sprintf('%d.%03d000', intdiv((int) $dueMs, 1000), (int) $dueMs % 1000);
            $due = \DateTimeImmutable::createFromFormat('U.u', $text);
        }
        return new Enqueued((string) $id, (int) $added === 1, $due === false ? null : $due);
    }

    /** Seconds → whole ms, half up: the same as the Python caller, so both send the same bytes. */
    private static function milliseconds(int|float $seconds): int
    {
        return (int) floor($seconds * 1000 + 0.5);
    }
}
