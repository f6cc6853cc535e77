<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;

/** Prints past php-fpm's 4 KB output buffer, then asks to run again once: the ask must still arrive. */
class Loud implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable, Records;

    public $tries = 2;

    public function __construct(string $tag)
    {
        $this->tag = $tag;
    }

    public function handle(): void
    {
        $this->record('run');
        echo str_repeat("a job's chatter\n", 1000);
        if ($this->attempts() === 1) {
            $this->release(1);
        }
    }
}
