<?php

declare(strict_types=1);

namespace Asyncphp\Symfony;

use Symfony\Component\DependencyInjection\ContainerBuilder;
use Symfony\Component\DependencyInjection\ContainerInterface;
use Symfony\Component\DependencyInjection\Reference;
use Symfony\Component\HttpKernel\Bundle\Bundle;

/**
 * Registers the `asyncphp://` transport factory and the runner the pool's front controller
 * (symfony/worker.php) calls. In config/bundles.php: `Asyncphp\Symfony\AsyncphpBundle::class => ['all' => true]`.
 */
final class AsyncphpBundle extends Bundle
{
    public function build(ContainerBuilder $container): void
    {
        $container->register('asyncphp.messenger.transport_factory', AsyncphpTransportFactory::class)
            ->addTag('messenger.transport_factory');
        $container->register('asyncphp.messenger.runner', Runner::class)
            ->setPublic(true)
            ->setArguments([
                new Reference('messenger.routable_message_bus'),
                new Reference('messenger.receiver_locator'),
                new Reference('event_dispatcher'),
                new Reference('logger', ContainerInterface::NULL_ON_INVALID_REFERENCE),
            ]);
    }
}
