<?php

namespace App\Jobs;

/** Every run of a test job, one JSON line in JOBS_LOG, for the test to read. */
trait Records
{
    public string $tag = '';

    protected function record(string $what, array $more = []): void
    {
        $line = ['job' => class_basename($this), 'tag' => $this->tag, 'what' => $what,
            'attempt' => $this->attempts(), 'at' => microtime(true)] + $more;
        file_put_contents((string) getenv('JOBS_LOG'), json_encode($line) . "\n", FILE_APPEND | LOCK_EX);
    }
}
