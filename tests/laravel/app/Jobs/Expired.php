<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;

/** Its retryUntil is in the past: Laravel fails it without running it. */
class Expired implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, Records;

    public function __construct(string $tag)
    {
        $this->tag = $tag;
    }

    public function retryUntil(): \DateTimeInterface
    {
        return now()->subMinute();
    }

    public function handle(): void
    {
        $this->record('run');
    }

    public function failed(\Throwable $e): void
    {
        $this->record('failed', ['error' => get_class($e)]);
    }
}
