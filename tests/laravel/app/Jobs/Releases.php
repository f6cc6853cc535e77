<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;

/** Releases itself for $delay seconds on its first attempt, then is done. */
class Releases implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, Records;

    public $tries = 2;

    public function __construct(string $tag, public int $releaseFor = 2)
    {
        $this->tag = $tag;
    }

    public function handle(): void
    {
        $this->record('run');
        if ($this->attempts() === 1) {
            $this->release($this->releaseFor);
            return;
        }
        $this->record('done');
    }
}
