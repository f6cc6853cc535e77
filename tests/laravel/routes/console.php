<?php

// The commands the bridge's tests drive the app with.

use App\Jobs\Expired;
use App\Jobs\Flaky;
use App\Jobs\Loud;
use App\Jobs\Note;
use App\Jobs\Releases;
use App\Jobs\Slow;
use App\Jobs\Trivial;
use App\Jobs\UniqueNote;
use Illuminate\Bus\Batch;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Artisan;
use Illuminate\Support\Facades\Bus;
use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;

if (!function_exists('bridge_note')) { // config:cache loads this file a second time
    function bridge_note(string $what): void
    {
        $line = ['job' => 'callback', 'what' => $what, 'at' => microtime(true)];
        file_put_contents((string) getenv('JOBS_LOG'), json_encode($line) . "\n", FILE_APPEND | LOCK_EX);
    }
}

// The tables queue:failed-table and queue:batches-table would make, as their migrations have them.
Artisan::command('bridge:tables', function () {
    DB::statement('PRAGMA journal_mode = WAL'); // readers beside the writer
    Schema::create('failed_jobs', function (Blueprint $table) {
        $table->id();
        $table->string('uuid')->unique();
        $table->text('connection');
        $table->text('queue');
        $table->longText('payload');
        $table->longText('exception');
        $table->timestamp('failed_at')->useCurrent();
    });
    Schema::create('job_batches', function (Blueprint $table) {
        $table->string('id')->primary();
        $table->string('name');
        $table->integer('total_jobs');
        $table->integer('pending_jobs');
        $table->integer('failed_jobs');
        $table->text('failed_job_ids');
        $table->mediumText('options')->nullable();
        $table->integer('cancelled_at')->nullable();
        $table->integer('created_at');
        $table->integer('finished_at')->nullable();
    });
});

Artisan::command('bridge:dispatch {what} {tag} {--n=1} {--connection=asyncphp}', function (string $what, string $tag) {
    $n = (int) $this->option('n');
    match ($what) {
        'flaky' => Flaky::dispatch($tag, 3),
        'always' => Flaky::dispatch($tag, 99),
        'backoff' => Flaky::dispatch($tag, 3, [1, 3]),
        'release' => Releases::dispatch($tag, 2),
        'later' => Note::dispatch($tag)->delay(3),
        'expired' => Expired::dispatch($tag),
        'high' => Note::dispatch($tag)->onQueue('high'),
        'slow' => Slow::dispatch($tag),
        'loud' => Loud::dispatch($tag),
        'at' => Note::dispatch($tag)->delay(now()->addSeconds(3)),
        'chain' => Bus::chain([new Note("$tag-1"), new Note("$tag-2"), new Note("$tag-3")])->dispatch(),
        'chain-fails' => Bus::chain([new Note("$tag-1"), new Note("$tag-2", true), new Note("$tag-3")])
            ->catch(function (Throwable $e) {
                bridge_note('catch: ' . $e->getMessage());
            })->dispatch(),
        'batch' => Bus::batch(array_map(fn (int $i) => new Note("$tag-$i"), range(1, $n)))
            ->then(function (Batch $batch) {
                bridge_note('then');
            })->finally(function (Batch $batch) {
                bridge_note('finally');
            })->dispatch(),
        'unique' => array_map(fn () => UniqueNote::dispatch($tag), range(1, $n)),
        // The benchmark's: $n trivial jobs on the queue $tag, of the connection --connection.
        'trivial' => array_map(
            fn () => Trivial::dispatch()->onConnection($this->option('connection'))->onQueue($tag),
            range(1, $n),
        ),
    };
    $this->line(json_encode(['dispatched' => microtime(true)]));
});

Artisan::command('bridge:size {queue}', function (string $queue) {
    $q = Illuminate\Support\Facades\Queue::connection();
    $this->line(json_encode([
        'size' => $q->size($queue), 'pending' => $q->pendingSize($queue), 'delayed' => $q->delayedSize($queue),
        'reserved' => $q->reservedSize($queue), 'oldest' => $q->creationTimeOfOldestPendingJob($queue),
    ]));
});
