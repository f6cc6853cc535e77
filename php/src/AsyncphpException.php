<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * Everything the client refuses or cannot do: a payload the daemon would skip, a bad argument,
 * Redis unreachable or refusing, a pub/sub message nobody received (when asked to throw).
 * The message says what, and why, in one line.
 */
final class AsyncphpException extends \RuntimeException
{
}
