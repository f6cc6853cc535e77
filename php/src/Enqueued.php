<?php

declare(strict_types=1);

namespace Asyncphp;

/** What a durable publish did. */
final class Enqueued
{
    public function __construct(
        /** The stream entry's id; "d<n>" for a job waiting until it is due. */
        public readonly string $id,
        /** False: a job with the same unique key holds its guard, and $id is that job's. */
        public readonly bool $added,
        /** When it is due, by Redis's clock, if delayed or scheduled. */
        public readonly ?\DateTimeImmutable $dueAt,
    ) {
    }
}
