<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * What a message may be for the daemon to run it: its settings max_message_bytes, max_nesting
 * (php.ini max_input_nesting_level) and max_fields (php.ini max_input_vars). The defaults are
 * the daemon's; set these to match a daemon configured otherwise.
 */
final class Limits
{
    public function __construct(
        public readonly int $maxBytes = 1 << 20,
        public readonly int $maxNesting = 64,
        public readonly int $maxFields = 1000,
    ) {
    }
}
