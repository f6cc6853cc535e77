<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * Where the app a front controller serves lives (laravel/worker.php, symfony/worker.php): the
 * pool's env[<variable>], else the app this library is installed in, found from the path the
 * daemon asked for (<app>/vendor/asyncphp/client/<framework>/worker.php): not from __DIR__, which
 * PHP resolves through the symlink a Composer path repository makes to the library's checkout.
 * Required by path, before any autoloader: it finds the app's.
 */
final class AppBase
{
    /** @param array<string, mixed> $server */
    public static function find(array $server, string $variable, string $framework): string
    {
        $base = $server[$variable] ?? '';
        if (is_string($base) && $base !== '') {
            return $base;
        }
        $script = (string) ($server['SCRIPT_FILENAME'] ?? '');
        return str_ends_with($script, "/vendor/asyncphp/client/$framework/worker.php")
            ? dirname($script, 5)
            : dirname(__DIR__, 4);
    }

    /** The app's Composer autoloader, or the library's own when the app has none. */
    public static function autoload(string $base): void
    {
        require is_file("$base/vendor/autoload.php") ? "$base/vendor/autoload.php" : dirname(__DIR__) . '/autoload.php';
    }
}
