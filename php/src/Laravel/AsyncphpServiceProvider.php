<?php

declare(strict_types=1);

namespace Asyncphp\Laravel;

use Illuminate\Queue\QueueManager;
use Illuminate\Support\ServiceProvider;

/** Registers the `asyncphp` queue driver (found by Laravel's package discovery, composer.json). */
final class AsyncphpServiceProvider extends ServiceProvider
{
    public function register(): void
    {
        $this->app->afterResolving('queue', function (QueueManager $manager): void {
            $manager->addConnector('asyncphp', fn () => new AsyncphpConnector($this->app['redis']));
        });
    }
}
