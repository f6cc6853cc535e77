<?php

namespace App\Handler;

use App\Message\Note;

/** A second handler of the same message: each runs once per handling. */
final class SecondNoteHandler
{
    use Records;

    public function __invoke(Note $note): void
    {
        $this->record($note, 'second');
    }
}
