<?php

declare(strict_types=1);

namespace Asyncphp\Symfony;

use Asyncphp\Client;
use Asyncphp\Connection;
use Asyncphp\QueueSizes;
use Symfony\Component\Messenger\Envelope;
use Symfony\Component\Messenger\Stamp\DelayStamp;
use Symfony\Component\Messenger\Stamp\TransportMessageIdStamp;
use Symfony\Component\Messenger\Transport\Receiver\ListableReceiverInterface;
use Symfony\Component\Messenger\Transport\Receiver\MessageCountAwareInterface;
use Symfony\Component\Messenger\Transport\Serialization\SerializerInterface;
use Symfony\Component\Messenger\Transport\TransportInterface;

/**
 * Messenger's transport onto an asyncphp stream. send() adds the envelope as the transport's
 * serializer encodes it, whole, in one field of the message (`symfony`: PHP would rewrite dots and
 * spaces in form keys); a DelayStamp makes it a delayed job. get() finds nothing: the daemon pushes
 * each message to php-fpm (symfony/worker.php), so `messenger:consume` has nothing to do here.
 */
final class AsyncphpTransport implements TransportInterface, MessageCountAwareInterface, ListableReceiverInterface
{
    /** KEYS: the stream. ARGV: from, to, count (0: all). The entries, as XRANGE gives them. */
    private const RANGE = <<<'EOT'
if tonumber(ARGV[3]) > 0 then
    return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
end
return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])
EOT;
    /** KEYS: the stream. ARGV: the entry id. */
    private const DELETE = "return redis.call('XDEL', KEYS[1], ARGV[1])";

    /** The message field that holds the encoded envelope. */
    public const FIELD = 'symfony';

    private ?Client $client = null;
    private ?Connection $redis = null;

    /** @param \Closure(): \Redis $connect opens the connection, at the first use */
    public function __construct(
        private readonly \Closure $connect,
        private readonly string $stream,
        private readonly string $name,
        private readonly SerializerInterface $serializer,
        private readonly string $group = 'asyncphp',
    ) {
    }

    public function send(Envelope $envelope): Envelope
    {
        $encoded = $this->serializer->encode($envelope->withoutAll(TransportMessageIdStamp::class));
        $message = [
            self::FIELD => json_encode($encoded, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE),
            'transport' => $this->name,
        ];
        $publisher = $this->client()->stream($this->stream);
        $delay = $envelope->last(DelayStamp::class);
        if ($delay !== null && $delay->getDelay() > 0) {
            $publisher = $publisher->delay($delay->getDelay() / 1000);
        }
        return $envelope->with(new TransportMessageIdStamp($publisher->publish($message)));
    }

    /** Decodes what send() added: what the front controller hands to Messenger's Worker. */
    public function decode(string $field): Envelope
    {
        $encoded = json_decode($field, true, 512, JSON_THROW_ON_ERROR);
        return $this->serializer->decode(is_array($encoded) ? $encoded : []);
    }

    /** @return iterable<Envelope> nothing: the daemon pushes */
    public function get(): iterable
    {
        return [];
    }

    /**
     * Called for a message listed from the stream (a failure transport's, by messenger:failed:*):
     * it is done with, and leaves the stream. A message the daemon pushed is settled by the
     * request's answer instead (the runner's receiver).
     */
    public function ack(Envelope $envelope): void
    {
        $this->delete($envelope);
    }

    public function reject(Envelope $envelope): void
    {
        $this->delete($envelope);
    }

    /**
     * The stream's messages, oldest first: what `messenger:failed:show` lists of a failure
     * transport (whose stream no daemon reads).
     *
     * @return iterable<Envelope>
     */
    public function all(?int $limit = null): iterable
    {
        yield from $this->range('-', '+', $limit ?? 0);
    }

    /** @param mixed $id an entry id */
    public function find($id): ?Envelope
    {
        foreach ($this->range((string) $id, (string) $id, 1) as $envelope) {
            return $envelope;
        }
        return null;
    }

    /** @return \Generator<Envelope> */
    private function range(string $from, string $to, int $count): \Generator
    {
        $entries = (array) $this->redis()->script(self::RANGE, [$this->stream], [$from, $to, $count]);
        foreach ($entries as [$id, $fields]) {
            $values = [];
            for ($i = 0; $i + 1 < count($fields); $i += 2) {
                $values[$fields[$i]] = $fields[$i + 1];
            }
            $message = json_decode((string) ($values['payload'] ?? ''), true);
            if (is_array($message) && is_string($message[self::FIELD] ?? null)) {
                yield $this->decode($message[self::FIELD])->with(new TransportMessageIdStamp((string) $id));
            }
        }
    }

    private function delete(Envelope $envelope): void
    {
        $id = $envelope->last(TransportMessageIdStamp::class)?->getId();
        if ($id !== null) {
            $this->redis()->script(self::DELETE, [$this->stream], [(string) $id]);
        }
    }

    /** Messages not yet done: delayed, waiting, and read by a daemon but not settled. */
    public function getMessageCount(): int
    {
        [$delayed, $waiting, $reserved] = QueueSizes::of($this->redis(), $this->stream, $this->group);
        return $delayed + $waiting + $reserved;
    }

    public function name(): string
    {
        return $this->name;
    }

    private function client(): Client
    {
        return $this->client ??= new Client($this->redis());
    }

    /** The connection, opened at the first use (a kernel boots without touching Redis). */
    private function redis(): Connection
    {
        return $this->redis ??= Client::connection(($this->connect)());
    }
}
