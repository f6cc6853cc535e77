<?php

declare(strict_types=1);

// The php-fpm pool's worker script for a Symfony app (the daemon's worker_script): one Messenger
// message per request (Asyncphp\Symfony\FrontController). The app: env[SYMFONY_BASE_PATH], else
// the one this library is installed in (Asyncphp\AppBase). Its kernel: env[KERNEL_CLASS] (default
// App\Kernel), with APP_ENV and APP_DEBUG, and the app's .env files when it has them.

require_once dirname(__DIR__) . '/src/AppBase.php';
$base = Asyncphp\AppBase::find($_SERVER, 'SYMFONY_BASE_PATH', 'symfony');
Asyncphp\AppBase::autoload($base);
if (class_exists(Symfony\Component\Dotenv\Dotenv::class) && (is_file("$base/.env") || is_file("$base/.env.local.php"))) {
    (new Symfony\Component\Dotenv\Dotenv())->bootEnv("$base/.env");
}
$class = (string) ($_SERVER['KERNEL_CLASS'] ?? 'App\Kernel');
$env = (string) ($_SERVER['APP_ENV'] ?? 'prod');
$debug = filter_var($_SERVER['APP_DEBUG'] ?? ($env !== 'prod'), FILTER_VALIDATE_BOOL);
(new Asyncphp\Symfony\FrontController(fn () => new $class($env, $debug)))->handle($_POST, $_SERVER);
