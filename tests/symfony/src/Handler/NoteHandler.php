<?php

namespace App\Handler;

use App\Message\Note;
use Symfony\Component\Messenger\Exception\UnrecoverableMessageHandlingException;

final class NoteHandler
{
    use Records;

    public function __invoke(Note $note): void
    {
        $runs = self::runsOf($note->tag);
        $this->record($note, 'run', ['run' => $runs + 1]);
        if ($note->behave === 'flaky' && $runs < $note->failures) {
            throw new \RuntimeException("flaky failure " . ($runs + 1));
        }
        if ($note->behave === 'always') {
            throw new \RuntimeException('always fails');
        }
        if ($note->behave === 'unrecoverable') {
            throw new UnrecoverableMessageHandlingException('no point in trying again');
        }
    }
}
