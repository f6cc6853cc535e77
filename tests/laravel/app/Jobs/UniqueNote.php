<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldBeUnique;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Queue\SerializesModels;

/** Unique by its tag, until it has run (Laravel's cache lock). */
class UniqueNote implements ShouldQueue, ShouldBeUnique
{
    use Dispatchable, InteractsWithQueue, Queueable, SerializesModels, Records;

    public $uniqueFor = 60;

    public function __construct(string $tag)
    {
        $this->tag = $tag;
    }

    public function uniqueId(): string
    {
        return $this->tag;
    }

    public function handle(): void
    {
        $this->record('run');
    }
}
