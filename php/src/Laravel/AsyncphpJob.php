<?php

declare(strict_types=1);

namespace Asyncphp\Laravel;

use Illuminate\Container\Container;
use Illuminate\Contracts\Queue\Job as JobContract;
use Illuminate\Queue\Jobs\Job;

/**
 * One Laravel job, as the daemon handed it to php-fpm: its payload, its stream entry and its
 * attempt (counted by asyncphp across retries and releases). delete() and release() only mark it:
 * the front controller answers the daemon accordingly (done, or Asyncphp-Retry-In).
 */
final class AsyncphpJob extends Job implements JobContract
{
    private int $retryIn = 0;
    private bool $failedAfterDelete = false;

    public function __construct(
        Container $container,
        private readonly string $payload,
        private readonly string $messageId,
        private readonly int $attempt,
        string $connectionName,
        string $queue,
    ) {
        $this->container = $container;
        $this->connectionName = $connectionName;
        $this->queue = $queue;
    }

    public function getJobId(): string
    {
        return (string) ($this->payload()['id'] ?? $this->messageId);
    }

    public function getRawBody(): string
    {
        return $this->payload;
    }

    public function attempts(): int
    {
        return $this->attempt;
    }

    /** @param \DateTimeInterface|\DateInterval|int $delay */
    public function release($delay = 0): void
    {
        parent::release($delay);
        $this->retryIn = max(0, $this->secondsUntil($delay));
    }

    /** @param \Throwable|null $e */
    public function fail($e = null): void
    {
        // Laravel fires no JobFailed for a job deleted before it failed: it is gone, as with its
        // Redis driver, and the front controller must tell that from a JobFailed that never came.
        $this->failedAfterDelete = $this->isDeleted();
        parent::fail($e);
    }

    /** Whether it failed only once it had deleted itself (so no failed_jobs row is owed). */
    public function failedAfterDelete(): bool
    {
        return $this->failedAfterDelete;
    }

    /** Seconds from now the job asked to run again in, once released. */
    public function retryIn(): int
    {
        return $this->retryIn;
    }

    /** The stream entry the daemon took the job from. */
    public function messageId(): string
    {
        return $this->messageId;
    }
}
