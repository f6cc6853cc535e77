<?php
// The benchmark worker: one line per job, no sleep. It records the job number, the time the message
// was published (when the message carries it) and when this script started, for latency figures.
$started = microtime(true);
$line = ($_POST['n'] ?? '-') . ' ' . ($_POST['sent'] ?? '-') . ' ' . sprintf('%.6f', $started) . PHP_EOL;
file_put_contents(getenv('ASYNCPHP_WORKER_LOG'), $line, FILE_APPEND | LOCK_EX);
