<?php

declare(strict_types=1);

// The php-fpm pool's worker script for a Laravel app (the daemon's worker_script): one Laravel
// job per request (Asyncphp\Laravel\FrontController). The app is the one this library is installed
// in (vendor/asyncphp/client/laravel/worker.php), or the pool's env[LARAVEL_BASE_PATH].

$base = $_SERVER['LARAVEL_BASE_PATH'] ?? '';
if (!is_string($base) || $base === '') {
    $base = dirname(__DIR__, 4);
}
if (is_file("$base/vendor/autoload.php")) {
    require "$base/vendor/autoload.php";
} else {
    require dirname(__DIR__) . '/autoload.php';
}
(new Asyncphp\Laravel\FrontController($base))->handle($_POST, $_SERVER);
