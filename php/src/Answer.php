<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * A front controller's answer to the daemon (docs/contract.md, "Asking the daemon"): response
 * headers and a status, set after the job ran. What the job prints is held until the answer is
 * set (held()): past php-fpm's 4 KB output buffer the headers would go out first, and the ask with
 * them. A header that can no longer be sent is said on stderr.
 */
final class Answer
{
    /** Runs $job with its output held, then lets it all out. */
    public static function held(callable $job): void
    {
        ob_start();
        try {
            $job();
        } finally {
            self::release();
        }
    }

    /** Lets the held output out (the answer goes with it). */
    public static function release(): void
    {
        while (ob_get_level() > 0) {
            ob_end_flush();
        }
    }

    /** Asyncphp-Dead-Letter, Asyncphp-Failed or Asyncphp-Retry-In: one line, 500 characters at most. */
    public static function ask(string $header, string $value): void
    {
        if (self::sent("$header: $value")) {
            return;
        }
        header($header . ': ' . substr(preg_replace('/\s+/', ' ', $value) ?? '', 0, 500));
    }

    public static function status(int $code): void
    {
        if (!self::sent("status $code")) {
            http_response_code($code);
        }
    }

    private static function sent(string $what): bool
    {
        if (!headers_sent($file, $line)) {
            return false;
        }
        error_log("asyncphp: output was sent before the answer, from $file:$line: $what is lost");
        return true;
    }
}
