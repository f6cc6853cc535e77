<?php

namespace App\Handler;

use App\Message\Note;

/** Every run, one JSON line in JOBS_LOG, for the test to read. */
trait Records
{
    private function record(Note $note, string $what, array $more = []): void
    {
        $line = ['handler' => (new \ReflectionClass($this))->getShortName(), 'tag' => $note->tag, 'what' => $what,
            'at' => microtime(true)] + $more;
        file_put_contents((string) getenv('JOBS_LOG'), json_encode($line) . "\n", FILE_APPEND | LOCK_EX);
    }

    private static function runsOf(string $tag): int
    {
        $log = (string) getenv('JOBS_LOG');
        $lines = is_file($log) ? file($log) : [];
        return count(array_filter($lines, fn ($l) => str_contains($l, '"tag":"' . $tag . '","what":"run"')
            && str_contains($l, '"handler":"NoteHandler"')));
    }
}
