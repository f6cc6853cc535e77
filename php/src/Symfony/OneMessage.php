<?php

declare(strict_types=1);

namespace Asyncphp\Symfony;

use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\Transport\Receiver\ReceiverInterface;

/**
 * The receiver the runner hands Messenger's Worker: the one message the daemon pushed, once.
 * Acknowledging and rejecting are the daemon's, by the request's answer: nothing to do here.
 */
final class OneMessage implements ReceiverInterface
{
    private bool $given = false;

    public function __construct(private readonly Envelope $envelope)
    {
    }

    /** @return iterable<Envelope> */
    public function get(): iterable
    {
        if ($this->given) {
            return [];
        }
        $this->given = true;
        return [$this->envelope];
    }

    public function ack(Envelope $envelope): void
    {
    }

    public function reject(Envelope $envelope): void
    {
    }
}
