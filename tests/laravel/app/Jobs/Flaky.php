<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;

/** Fails until its $succeedAt-th attempt; $backoff between tries. */
class Flaky implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, Records;

    public $tries = 3;
    public $backoff = 0;

    public function __construct(string $tag, public int $succeedAt = 3, $backoff = 0, int $tries = 3)
    {
        $this->tag = $tag;
        $this->backoff = $backoff;
        $this->tries = $tries;
    }

    public function handle(): void
    {
        $this->record('run');
        if ($this->attempts() < $this->succeedAt) {
            throw new \RuntimeException("attempt {$this->attempts()} of {$this->tag} fails on purpose");
        }
        $this->record('done');
    }

    public function failed(\Throwable $e): void
    {
        $this->record('failed', ['error' => $e->getMessage()]);
    }
}
