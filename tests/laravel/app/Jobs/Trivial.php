<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;

/** The benchmark's job: one short line in JOBS_LOG, so that a run counts what ran. */
class Trivial implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable;

    public function handle(): void
    {
        file_put_contents((string) getenv('JOBS_LOG'), getmypid() . "\n", FILE_APPEND | LOCK_EX);
    }
}
