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
    ],
    'batching' => ['database' => 'sqlite', 'table' => 'job_batches'],
    'failed' => ['driver' => 'database-uuids', 'database' => 'sqlite', 'table' => 'failed_jobs'],
];
