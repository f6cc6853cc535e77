<?php

namespace App;

use Asyncphp\Symfony\AsyncphpBundle;
use Symfony\Bundle\FrameworkBundle\FrameworkBundle;
use Symfony\Bundle\FrameworkBundle\Kernel\MicroKernelTrait;
use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;

/** The tests' app: Messenger with asyncphp:// transports, each test's own cache and log dirs. */
class Kernel extends BaseKernel
{
    use MicroKernelTrait;

    public function registerBundles(): iterable
    {
        return [new FrameworkBundle(), new AsyncphpBundle()];
    }

    public function getProjectDir(): string
    {
        return dirname(__DIR__);
    }

    public function getCacheDir(): string
    {
        return (string) getenv('APP_VAR') . '/cache/' . $this->environment;
    }

    public function getLogDir(): string
    {
        return (string) getenv('APP_VAR') . '/log';
    }

    protected function configureContainer(ContainerConfigurator $container): void
    {
        $container->import(__DIR__ . '/../config/services.php');
    }
}
