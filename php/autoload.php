<?php

declare(strict_types=1);

// For an app without Composer: require this file (or copy src/ and register the same PSR-4 rule).
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Asyncphp\\') && !str_starts_with($class, 'Asyncphp\\Tests\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen('Asyncphp\\'))) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
