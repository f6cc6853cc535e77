<?php

namespace App\Jobs;

use Illuminate\Bus\Batchable;
use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;

/** Records its run; fails when told to (for a chain's catch). */
class Note implements ShouldQueue
{
    use Batchable, Dispatchable, InteractsWithQueue, Queueable, SerializesModels, Records;

    public function __construct(string $tag, public bool $fail = false)
    {
        $this->tag = $tag;
    }

    public function handle(): void
    {
        $this->record('run', ['queue' => $this->job->getQueue(), 'batch' => $this->batchId]);
        if ($this->fail) {
            throw new \RuntimeException("{$this->tag} fails on purpose");
        }
    }
}
