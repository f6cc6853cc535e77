<?php

// A minimal Laravel app for the bridge's tests, on the Laravel Debian packages (no Composer
// registry here): the framework's autoloader, the asyncphp library's, and the app's own classes.
require_once '/usr/share/php/Illuminate/autoload.php';
require_once dirname(__DIR__, 3) . '/php/autoload.php';
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = dirname(__DIR__) . '/app/' . str_replace('\\', '/', substr($class, 4)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

$app = new Illuminate\Foundation\Application(dirname(__DIR__));
// Each test's own storage (logs, the maintenance flag); its caches are the APP_*_CACHE paths.
$app->useStoragePath((string) getenv('APP_STORAGE'));
$app->singleton(Illuminate\Contracts\Console\Kernel::class, App\Console\Kernel::class);
$app->singleton(Illuminate\Contracts\Debug\ExceptionHandler::class, Illuminate\Foundation\Exceptions\Handler::class);

return $app;
