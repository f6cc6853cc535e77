<?php

declare(strict_types=1);

namespace Asyncphp\Laravel;

use Asyncphp\Answer;
use Illuminate\Contracts\Cache\Factory as CacheFactory;
use Illuminate\Contracts\Console\Kernel;
use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Foundation\Application;
use Illuminate\Queue\Events\JobFailed;
use Illuminate\Queue\Worker;
use Illuminate\Queue\WorkerOptions;

/**
 * One request of the php-fpm pool = one Laravel job (laravel/worker.php runs this).
 *
 * It boots the app as `artisan` does (the console kernel's bootstrap), makes the job from the
 * request, and runs it through Laravel's own Worker::process(), with what `queue:work` adds to a
 * bare Worker: the cache (maxExceptions, unique jobs), the JobFailed listener that writes
 * failed_jobs, and the maintenance-mode check. Its answer tells the daemon what became of it:
 *
 * - done (deleted, or it ran to its end): 200;
 * - released (release($delay), or an exception with tries left, after its backoff):
 *   `Asyncphp-Retry-In: <seconds>`: the daemon puts it back through the delayed set, the attempt
 *   counted;
 * - failed for good: written to failed_jobs (so queue:failed, queue:retry and queue:flush work),
 *   answered `Asyncphp-Failed: <exception>` so that the daemon acknowledges it without a dead letter
 *   of its own; if failed_jobs could not be written, `Asyncphp-Dead-Letter` instead: kept by
 *   asyncphp, never lost;
 * - the app down for maintenance: `Asyncphp-Retry-In: <maintenance_delay>; not-run` (no attempt spent);
 * - the app cannot boot, or a fatal error: 500 and the error on stderr; the daemon retries it by its
 *   own budget (max_attempts), then keeps it as a dead letter with that stderr.
 */
final class FrontController
{
    /** The message field that holds Laravel's payload (read before the app, and Laravel, are loaded). */
    public const FIELD = 'laravel';

    public function __construct(private readonly string $basePath)
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
        $payload = $post[self::FIELD] ?? null;
        if (!is_string($payload)) {
            Answer::ask('Asyncphp-Dead-Letter', 'not a Laravel job: the message has no "laravel" field');
            return;
        }
        try {
            $app = require $this->basePath . '/bootstrap/app.php';
            $app->make(Kernel::class)->bootstrap();
        } catch (\Throwable $e) {
            error_log("asyncphp: the Laravel app in {$this->basePath} could not boot: " . self::describe($e, true));
            Answer::status(500);
            return;
        }
        $connection = (string) ($post['connection'] ?? '') ?: 'asyncphp';
        $config = (array) $app['config']->get("queue.connections.$connection", []);
        if ($app->isDownForMaintenance() && !($config['force'] ?? false)) {
            Answer::ask('Asyncphp-Retry-In', ((int) ($config['maintenance_delay'] ?? 10)) . '; not-run');
            return;
        }
        $job = new AsyncphpJob(
            $app,
            $payload,
            (string) ($server['ASYNCPHP_MESSAGE_ID'] ?? ''),
            max(1, (int) ($server['ASYNCPHP_ATTEMPT'] ?? 1)),
            $connection,
            (string) ($post['queue'] ?? $config['queue'] ?? 'default'),
        );
        $recorded = $this->recordFailures($app);
        $worker = $app['queue.worker'];
        assert($worker instanceof Worker);
        if ($app->bound(CacheFactory::class)) {
            $worker->setCache($app->make(CacheFactory::class)->driver());
        }
        $options = new WorkerOptions(
            name: 'asyncphp',
            backoff: $config['backoff'] ?? 0,
            timeout: 0, // pcntl is not in php-fpm: the pool's request_terminate_timeout kills a job that overruns
            maxTries: (int) ($config['tries'] ?? 1),
        );
        $error = null;
        try {
            $worker->process($connection, $job, $options);
        } catch (\Throwable $e) {
            $error = $e;
        }
        if ($job->hasFailed() && !$job->failedAfterDelete()) {
            // JobFailed fired, or a listener before ours threw (then no row was written either).
            [$written, $why] = $recorded() ?? [false, 'a JobFailed listener failed: '
                . ($error !== null ? self::describe($error, false) : 'no exception')];
            Answer::status(500);
            if ($written) {
                Answer::ask('Asyncphp-Failed', $why);
            } else {
                Answer::ask('Asyncphp-Dead-Letter', "failed for good, and failed_jobs could not be written: $why");
            }
        } elseif ($job->isReleased()) {
            Answer::ask('Asyncphp-Retry-In', (string) $job->retryIn());
        } elseif ($error !== null && !$job->isDeleted()) {
            // Neither released nor failed by Laravel (it threw past its own handling): the daemon's budget.
            error_log('asyncphp: ' . self::describe($error, true));
            Answer::status(500);
        }
        // A job that failed after deleting itself is gone, as with Laravel's Redis driver: done.
        $this->finish();
        if ($error !== null) {
            $app->make(ExceptionHandler::class)->report($error);
        }
        $app->terminate();
    }

    /**
     * Ends the response: the daemon has its answer, and a slow report() or terminate() after it
     * cannot be killed into a second run of a job already settled.
     */
    private function finish(): void
    {
        Answer::release();
        // Safe here: the daemon asks for no kept connection (FCGI_KEEP_CONN), on which this call has
        // deadlocked the next request (php/php-src#10335).
        if (function_exists('fastcgi_finish_request')) {
            fastcgi_finish_request();
        }
    }

    /**
     * Listens for JobFailed as `queue:work` does (WorkCommand::logFailedJob), and keeps whether
     * failed_jobs took the row.
     *
     * @return callable(): (array{bool, string}|null) null while no JobFailed fired
     */
    private function recordFailures(Application $app): callable
    {
        $state = null;
        $app['events']->listen(JobFailed::class, function (JobFailed $event) use ($app, &$state): void {
            $why = self::describe($event->exception, false);
            try {
                $app['queue.failer']->log(
                    $event->connectionName,
                    $event->job->getQueue(),
                    $event->job->getRawBody(),
                    $event->exception,
                );
                $state = [true, $why];
            } catch (\Throwable $e) {
                $state = [false, self::describe($e, false) . "; the job's own: $why"];
                error_log('asyncphp: failed_jobs refused the failed job: ' . self::describe($e, true));
            }
        });
        return function () use (&$state): ?array {
            return $state;
        };
    }

    private static function describe(\Throwable $e, bool $where): string
    {
        $text = get_class($e) . ': ' . $e->getMessage();
        return $where ? "$text in {$e->getFile()}:{$e->getLine()}" : $text;
    }
}
