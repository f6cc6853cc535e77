<?php

declare(strict_types=1);

// The php-fpm pool's worker script for a Laravel app (the daemon's worker_script): one Laravel
// job per request (Asyncphp\Laravel\FrontController). The app is the pool's env[LARAVEL_BASE_PATH],
// else the one this library is installed in, found from the path the daemon asked for
// (<app>/vendor/asyncphp/client/laravel/worker.php): not from __DIR__, which PHP resolves through
// the symlink a Composer path repository makes to the library's own checkout.

$base = $_SERVER['LARAVEL_BASE_PATH'] ?? '';
if (!is_string($base) || $base === '') {
    $script = (string) ($_SERVER['SCRIPT_FILENAME'] ?? __FILE__);
    $base = str_ends_with($script, '/vendor/asyncphp/client/laravel/worker.php')
        ? dirname($script, 5)
        : dirname(__DIR__, 4);
}
if (is_file("$base/vendor/autoload.php")) {
    require "$base/vendor/autoload.php";
} else {
    require dirname(__DIR__) . '/autoload.php';
}
(new Asyncphp\Laravel\FrontController($base))->handle($_POST, $_SERVER);
