<?php
// A test worker for scheduling (and the benchmark's). Logs "start <stream> <n> <message id> <due at
// or -> <time> <request id>" when it begins (the time taken before the locked count below, so that a
// lateness measured is the daemon's, not this lock's; the request id rises in the order the daemon
// queued the jobs) and "end <stream> <n> <time>" when it ends; sleeps $_POST['ms'] ms in between. Counts
// the jobs of its stream running at once in <log>.<stream>.running: "<now> <most ever>". With
// $_POST['fail'], it answers 500 at its end: a job that fails every time.
$began = microtime(true);
$log = getenv('ASYNCPHP_WORKER_LOG');
$stream = $_SERVER['ASYNCPHP_CHANNEL'];
$n = $_POST['n'] ?? '-';

function running(string $file, int $change): void
{
    $f = fopen($file, 'c+');
    flock($f, LOCK_EX);
    [$now, $most] = array_map('intval', explode(' ', trim(stream_get_contents($f)) ?: '0 0'));
    $now += $change;
    $most = max($most, $now);
    ftruncate($f, 0);
    rewind($f);
    fwrite($f, "$now $most");
    fflush($f);
    flock($f, LOCK_UN);
    fclose($f);
}

running("$log.$stream.running", 1);
$line = sprintf(
    "start %s %s %s %s %.6f %s\n",
    $stream, $n, $_SERVER['ASYNCPHP_MESSAGE_ID'] ?? '-', $_SERVER['ASYNCPHP_DUE_AT'] ?? '-', $began,
    $_SERVER['ASYNCPHP_REQUEST_ID']
);
file_put_contents($log, $line, FILE_APPEND | LOCK_EX);
usleep((int) ($_POST['ms'] ?? 0) * 1000);
running("$log.$stream.running", -1);
file_put_contents($log, sprintf("end %s %s %.6f\n", $stream, $n, microtime(true)), FILE_APPEND | LOCK_EX);
if (isset($_POST['fail'])) {
    http_response_code(500);
}
