<?php

return [
    'default' => 'asyncphp',
    'connections' => [
        'asyncphp' => [
            'driver' => 'asyncphp',
            'connection' => 'default',
            'queue' => 'default',
            'prefix' => 'laravel:',
            'tries' => 1,
            'maintenance_delay' => 1,
        ],
        // Laravel's own Redis driver, for the benchmark's `queue:work` beside the bridge.
        'redis' => ['driver' => 'redis', 'connection' => 'default', 'queue' => 'default',
            'retry_after' => 90, 'block_for' => 5],
    ],
    'batching' => ['database' => 'sqlite', 'table' => 'job_batches'],
    'failed' => ['driver' => 'database-uuids', 'database' => 'sqlite', 'table' => 'failed_jobs'],
];
