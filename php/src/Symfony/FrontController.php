<?php

declare(strict_types=1);

namespace Asyncphp\Symfony;

use Asyncphp\Answer;
use Symfony\Component\HttpKernel\KernelInterface;

/**
 * One request of the php-fpm pool = one Messenger message (symfony/worker.php runs this). It boots
 * the kernel (its cached container), and hands the message to the runner. Its answer: 200 when the
 * message was handled or re-sent for a retry; `Asyncphp-Failed` when it failed for good (Messenger
 * sent it to the failure transport); `Asyncphp-Dead-Letter` when it cannot be decoded or names no
 * asyncphp transport; 500 and the error on stderr when the kernel cannot boot or the re-send itself
 * failed (the daemon retries).
 */
final class FrontController
{
    /** @param \Closure(): KernelInterface $kernel makes the app's kernel */
    public function __construct(private readonly \Closure $kernel)
    {
    }

    /**
     * @param array<string, mixed> $post
     * @param array<string, mixed> $server
     */
    public function handle(array $post, array $server): void
    {
        Answer::held(fn () => $this->run($post, $server));
    }

    /**
     * @param array<string, mixed> $post
     * @param array<string, mixed> $server
     */
    private function run(array $post, array $server): void
    {
        $field = $post[AsyncphpTransport::FIELD] ?? null;
        if (!is_string($field)) {
            Answer::ask('Asyncphp-Dead-Letter', 'not a Messenger message: the message has no "symfony" field');
            return;
        }
        try {
            $kernel = ($this->kernel)();
            $kernel->boot();
            $runner = $kernel->getContainer()->get('asyncphp.messenger.runner');
            assert($runner instanceof Runner);
        } catch (\Throwable $e) {
            error_log('asyncphp: the Symfony kernel could not boot: ' . self::describe($e));
            Answer::status(500);
            return;
        }
        try {
            $asked = $runner->run(
                (string) ($post['transport'] ?? ''),
                $field,
                (string) ($server['ASYNCPHP_MESSAGE_ID'] ?? ''),
            );
        } catch (\Throwable $e) {
            error_log('asyncphp: the message could not be handled or sent for retry: ' . self::describe($e));
            Answer::status(500);
            return;
        }
        if ($asked !== null) {
            if ($asked[0] === 'Asyncphp-Failed') {
                Answer::status(500);
            }
            Answer::ask(...$asked);
        }
    }

    private static function describe(\Throwable $e): string
    {
        return get_class($e) . ': ' . $e->getMessage() . " in {$e->getFile()}:{$e->getLine()}";
    }
}
