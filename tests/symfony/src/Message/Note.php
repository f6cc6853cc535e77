<?php

namespace App\Message;

/** The tests' message: a tag to find its runs by, and how it behaves ('' does nothing else). */
final class Note
{
    public function __construct(public string $tag, public string $behave = '', public int $failures = 0)
    {
    }
}
