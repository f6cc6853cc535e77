<?php

return [
    'default' => 'sqlite',
    'connections' => [
        'sqlite' => ['driver' => 'sqlite', 'database' => env('DB_DATABASE'), 'prefix' => '',
            'foreign_key_constraints' => true,
            // Five php-fpm children write job_batches at once: wait for SQLite's lock (busy timeout).
            'options' => [PDO::ATTR_TIMEOUT => 20]],
    ],
    'redis' => [
        'client' => env('REDIS_CLIENT', 'phpredis'),
        'options' => ['prefix' => ''],
        'default' => ['host' => '127.0.0.1', 'port' => (int) env('REDIS_PORT', 6379), 'database' => 0],
    ],
];
