<?php

declare(strict_types=1);

// The php-fpm pool's worker script for a Laravel app (the daemon's worker_script): one Laravel
// job per request (Asyncphp\Laravel\FrontController). The app: env[LARAVEL_BASE_PATH], else the
// one this library is installed in (Asyncphp\AppBase).

require_once dirname(__DIR__) . '/src/AppBase.php';
$base = Asyncphp\AppBase::find($_SERVER, 'LARAVEL_BASE_PATH', 'laravel');
Asyncphp\AppBase::autoload($base);
(new Asyncphp\Laravel\FrontController($base))->handle($_POST, $_SERVER);
