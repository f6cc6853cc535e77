<?php

// Shared by every php-fpm child and artisan: unique jobs' locks and maxExceptions' counts.
return [
    'default' => 'redis',
    'stores' => ['redis' => ['driver' => 'redis', 'connection' => 'default', 'lock_connection' => 'default']],
    'prefix' => 'bridge_cache',
];
