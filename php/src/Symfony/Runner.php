<?php

declare(strict_types=1);

namespace Asyncphp\Symfony;

use Psr\Container\ContainerInterface;
use Psr\Log\LoggerInterface;
use Symfony\Component\EventDispatcher\EventDispatcherInterface;
use Symfony\Component\Messenger\Event\WorkerMessageFailedEvent;
use Symfony\Component\Messenger\Event\WorkerRunningEvent;
use Symfony\Component\Messenger\Event\WorkerStartedEvent;
use Symfony\Component\Messenger\Exception\HandlerFailedException;
use Symfony\Component\Messenger\Exception\MessageDecodingFailedException;
use Symfony\Component\Messenger\RoutableMessageBus;
use Symfony\Component\Messenger\Stamp\TransportMessageIdStamp;
use Symfony\Component\Messenger\Worker;

/**
 * One message of one request: decoded with its transport's serializer and handled by Messenger's
 * own Worker, as `messenger:consume` would, over a receiver that yields this message once. So the
 * Worker's events fire (received, handled or failed), the bus is the one the envelope names
 * (BusNameStamp), and the framework's listeners do the retries (a copy re-sent through the
 * transport with DelayStamp and RedeliveryStamp) and the failure transport.
 *
 * The service `asyncphp.messenger.runner` (AsyncphpBundle); symfony/worker.php calls it.
 */
final class Runner
{
    /** Messenger's listeners that need pcntl (5.4, and their 6.3+ successor). */
    private const SIGNAL_LISTENERS = [
        'Symfony\\Component\\Messenger\\EventListener\\StopWorkerOnSigtermSignalListener',
        'Symfony\\Component\\Messenger\\EventListener\\StopWorkerOnSignalsListener',
        'Symfony\\Component\\Messenger\\EventListener\\DispatchPcntlSignalListener',
    ];

    public function __construct(
        private readonly RoutableMessageBus $bus,
        private readonly ContainerInterface $receivers,
        private readonly EventDispatcherInterface $events,
        private readonly ?LoggerInterface $logger = null,
    ) {
    }

    /**
     * @return array{string, string}|null what to tell the daemon, as a header and its value
     *     (Asyncphp-Failed: failed for good, in the failure transport; Asyncphp-Dead-Letter: cannot
     *     be decoded), or null: done (handled, or re-sent for a retry)
     * @throws \Throwable the re-send or the failure transport's send failed: the daemon's retry
     */
    public function run(string $transportName, string $field, string $messageId): ?array
    {
        if (!$this->receivers->has($transportName)) {
            return ['Asyncphp-Dead-Letter', "no Messenger transport named '$transportName' in this app"];
        }
        $transport = $this->receivers->get($transportName);
        if (!$transport instanceof AsyncphpTransport) {
            return ['Asyncphp-Dead-Letter', "the transport '$transportName' is not an asyncphp:// one"];
        }
        try {
            $envelope = $transport->decode($field);
        } catch (MessageDecodingFailedException | \JsonException $e) {
            return ['Asyncphp-Dead-Letter', 'the message cannot be decoded: ' . $e->getMessage()];
        }
        if ($messageId !== '') {
            $envelope = $envelope->with(new TransportMessageIdStamp($messageId));
        }
        $worker = new Worker(
            [$transportName => new OneMessage($envelope)],
            $this->bus,
            $this->events,
            $this->logger,
        );
        $this->withoutSignalListeners();
        $stop = static function (WorkerRunningEvent $event): void {
            $event->getWorker()->stop();
        };
        // After Messenger's own (retry at 100, failure transport at -100): whether it failed for good.
        $failed = null;
        $failure = static function (WorkerMessageFailedEvent $event) use (&$failed): void {
            $failed = $event->willRetry() ? null : $event->getThrowable();
        };
        $this->events->addListener(WorkerRunningEvent::class, $stop);
        $this->events->addListener(WorkerMessageFailedEvent::class, $failure, -1000);
        try {
            $worker->run();
        } finally {
            $this->events->removeListener(WorkerRunningEvent::class, $stop);
            $this->events->removeListener(WorkerMessageFailedEvent::class, $failure);
        }
        if ($failed instanceof \Throwable) {
            // In the failure transport now (or dropped by Messenger, with its own log line, when
            // the app has none): the daemon counts it failed, and keeps no dead letter of its own.
            $error = $failed instanceof HandlerFailedException && $failed->getPrevious() !== null
                ? $failed->getPrevious()
                : $failed;
            return ['Asyncphp-Failed', get_class($error) . ': ' . $error->getMessage()];
        }
        return null;
    }

    /**
     * The listeners that make `messenger:consume` stop on SIGTERM and dispatch signals call
     * pcntl_*(), which php-fpm has not (the container was compiled by a CLI that has it); a request
     * needs no signal to stop: it handles one message. Off for this request.
     */
    private function withoutSignalListeners(): void
    {
        if (function_exists('pcntl_signal')) {
            return;
        }
        foreach ([WorkerStartedEvent::class, WorkerRunningEvent::class] as $event) {
            foreach ($this->events->getListeners($event) as $listener) {
                $owner = is_array($listener) ? $listener[0] : $listener;
                if (is_object($owner) && in_array(get_class($owner), self::SIGNAL_LISTENERS, true)) {
                    $this->events->removeListener($event, $listener);
                }
            }
        }
    }
}
