<?php

use App\Handler\NoteHandler;
use App\Handler\SecondNoteHandler;
use App\Message\Note;

return static function (Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator $c): void {
    $redis = 'asyncphp://127.0.0.1:' . (int) getenv('REDIS_PORT');
    $c->extension('framework', [
        'secret' => 'bridge-test',
        'test' => false,
        'messenger' => [
            'failure_transport' => 'failed',
            'transports' => [
                'async' => [
                    'dsn' => "$redis/symfony:async",
                    'retry_strategy' => ['max_retries' => 2, 'delay' => 1000, 'multiplier' => 2],
                ],
                'failed' => "$redis/symfony:failed",
            ],
            'routing' => [Note::class => 'async'],
        ],
    ]);
    $c->services()
        ->set(NoteHandler::class)->tag('messenger.message_handler')
        ->set(SecondNoteHandler::class)->tag('messenger.message_handler')
        ->set('logger', Psr\Log\NullLogger::class);
};
