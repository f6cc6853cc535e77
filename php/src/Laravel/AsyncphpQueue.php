<?php

declare(strict_types=1);

namespace Asyncphp\Laravel;

use Asyncphp\Client;
use Asyncphp\Connection;
use Asyncphp\QueueSizes;
use Illuminate\Contracts\Queue\Queue as QueueContract;
use Illuminate\Queue\Queue;
use Illuminate\Support\Str;

/**
 * Laravel's queue connection `'driver' => 'asyncphp'`: each job is added to its queue's Redis
 * stream, where asyncphp's daemon reads it and runs it in php-fpm (laravel/worker.php).
 *
 * The payload is the one Laravel makes (Queue::createPayload), carried whole as one field of the
 * message (`laravel`), byte for byte: PHP would rewrite dots and spaces in form keys, and
 * failed_jobs and queue:retry need the exact bytes. pop() finds nothing: the daemon pushes each
 * job to php-fpm, so no `queue:work` runs.
 */
class AsyncphpQueue extends Queue implements QueueContract
{
    /**
     * @param array<string, string> $streams queue name → stream name; a queue not named here is
     *     $prefix . its name (on a Redis Cluster, a prefix with a hash tag: '{laravel}:')
     */
    public function __construct(
        private readonly Client $client,
        private readonly Connection $redis,
        private readonly string $default = 'default',
        private readonly array $streams = [],
        private readonly string $prefix = 'laravel:',
        private readonly string $group = 'asyncphp',
        bool $dispatchAfterCommit = false,
    ) {
        $this->dispatchAfterCommit = $dispatchAfterCommit;
    }

    /** The stream a queue's jobs go to. */
    public function streamOf(?string $queue): string
    {
        $queue = $this->getQueue($queue);
        return $this->streams[$queue] ?? $this->prefix . $queue;
    }

    public function getQueue(?string $queue): string
    {
        return $queue ?: $this->default;
    }

    /**
     * Jobs not yet done: those waiting in the stream (the daemons' group lag, or its length before
     * any daemon read it), those running or waiting for a retry (pending), and the delayed ones.
     *
     * @param string|null $queue
     */
    public function size($queue = null): int
    {
        [$delayed, $waiting, $reserved] = $this->sizes($queue);
        return $delayed + $waiting + $reserved;
    }

    /** Jobs not yet read by a daemon (Laravel 12.19's pendingSize()). */
    public function pendingSize(?string $queue = null): int
    {
        return $this->sizes($queue)[1];
    }

    /** Jobs delayed: by later(), a release, a backoff (Laravel 12.19's delayedSize()). */
    public function delayedSize(?string $queue = null): int
    {
        return $this->sizes($queue)[0];
    }

    /** Jobs read by a daemon and not yet settled: running, or waiting for a retry. */
    public function reservedSize(?string $queue = null): int
    {
        return $this->sizes($queue)[2];
    }

    /** When the oldest job not yet read was added, in seconds since the epoch; null when none waits. */
    public function creationTimeOfOldestPendingJob(?string $queue = null): ?int
    {
        $id = $this->sizes($queue)[3];
        return $id === '' ? null : intdiv((int) explode('-', $id)[0], 1000);
    }

    /** @return array{int, int, int, string} delayed, waiting, reserved, the oldest waiting entry's id */
    private function sizes(?string $queue): array
    {
        return QueueSizes::of($this->redis, $this->streamOf($queue), $this->group);
    }

    /** @param string|object $job */
    public function push($job, $data = '', $queue = null): mixed
    {
        $queue = $this->getQueue($queue);
        return $this->enqueueUsing(
            $job,
            $this->createPayload($job, $queue, $data),
            $queue,
            null,
            fn (string $payload, ?string $queue) => $this->pushRaw($payload, $queue),
        );
    }

    /** @param array<string, mixed> $options */
    public function pushRaw($payload, $queue = null, array $options = []): mixed
    {
        $this->publisher($queue)->publish($this->message($payload, $queue));
        return json_decode($payload, true)['id'] ?? null;
    }

    /**
     * @param \DateTimeInterface|\DateInterval|int $delay
     * @param string|object $job
     */
    public function later($delay, $job, $data = '', $queue = null): mixed
    {
        $queue = $this->getQueue($queue);
        return $this->enqueueUsing(
            $job,
            $this->createPayload($job, $queue, $data),
            $queue,
            $delay,
            fn (string $payload, ?string $queue, mixed $delay) => $this->laterRaw($delay, $payload, $queue),
        );
    }

    /** @param \DateTimeInterface|\DateInterval|int $delay */
    public function laterRaw(mixed $delay, string $payload, ?string $queue = null): mixed
    {
        $publisher = $this->publisher($queue);
        // A time is kept to the ms (Redis's clock decides when it is due); an interval from now.
        $publisher = $delay instanceof \DateTimeInterface
            ? $publisher->at($delay)
            : $publisher->delay(max(0, $this->secondsUntil($delay)));
        $publisher->publish($this->message($payload, $queue));
        return json_decode($payload, true)['id'] ?? null;
    }

    /** Nothing to pop: the daemon hands each job to php-fpm as it comes (see laravel/worker.php). */
    public function pop($queue = null): mixed
    {
        return null;
    }

    /**
     * @param string|object $job
     * @return array<string, mixed>
     */
    protected function createPayloadArray($job, $queue, $data = ''): array
    {
        // An id, as Laravel's Redis driver gives its jobs: what push() returns and getJobId() says.
        return array_merge(parent::createPayloadArray($job, $queue, $data), ['id' => Str::random(32)]);
    }

    /** @return array<string, string> */
    private function message(string $payload, ?string $queue): array
    {
        return [
            FrontController::FIELD => $payload,
            'connection' => (string) $this->getConnectionName(),
            'queue' => $this->getQueue($queue),
        ];
    }

    private function publisher(?string $queue): \Asyncphp\StreamPublisher
    {
        return $this->client->stream($this->streamOf($queue));
    }
}
