<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;

/** Runs past the pool's request_terminate_timeout (20 s at most). */
class Slow implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, Records;

    public $tries = 2;
    public $timeout = 1;

    public function __construct(string $tag)
    {
        $this->tag = $tag;
    }

    public function handle(): void
    {
        $this->record('run');
        sleep(20);
        $this->record('done');
    }

    public function failed(\Throwable $e): void
    {
        $this->record('failed', ['error' => get_class($e)]);
    }
}
