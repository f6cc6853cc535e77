<?php

if (getenv('BROKEN_CONFIG')) {
    throw new RuntimeException('config/app.php is broken on purpose (BROKEN_CONFIG)');
}

return [
    'name' => 'bridge-test',
    'env' => 'testing',
    'debug' => false,
    'key' => 'base64:' . base64_encode(str_repeat('k', 32)),
    'cipher' => 'AES-256-CBC',
    'timezone' => 'UTC',
    'providers' => [
        Illuminate\Bus\BusServiceProvider::class,
        Illuminate\Cache\CacheServiceProvider::class,
        Illuminate\Database\DatabaseServiceProvider::class,
        Illuminate\Encryption\EncryptionServiceProvider::class,
        Illuminate\Filesystem\FilesystemServiceProvider::class,
        Illuminate\Foundation\Providers\ConsoleSupportServiceProvider::class, // queue:retry, queue:failed…
        Illuminate\Queue\QueueServiceProvider::class,
        Illuminate\Redis\RedisServiceProvider::class,
        Illuminate\View\ViewServiceProvider::class,
        // Package discovery reads vendor/composer/installed.json, which an app without Composer lacks.
        Asyncphp\Laravel\AsyncphpServiceProvider::class,
    ],
];
