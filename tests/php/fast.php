<?php
// A fast test worker: one line per job, no sleep.
file_put_contents(getenv('ASYNCPHP_WORKER_LOG'), ($_POST['n'] ?? '?') . PHP_EOL, FILE_APPEND | LOCK_EX);
