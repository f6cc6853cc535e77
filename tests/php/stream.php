<?php
// A test worker for the durable mode: one line per run, "n message-id attempt". A message with
// "status" answers that status instead, until the file <log>.heal exists.
$log = getenv('ASYNCPHP_WORKER_LOG');
$status = (int) ($_POST['status'] ?? 200);
if ($status !== 200 && !file_exists($log . '.heal')) {
    error_log('failing on purpose with ' . $status . ', attempt ' . $_SERVER['ASYNCPHP_ATTEMPT']);
    http_response_code($status);
    return;
}
$line = ($_POST['n'] ?? '-') . ' ' . $_SERVER['ASYNCPHP_MESSAGE_ID'] . ' ' . $_SERVER['ASYNCPHP_ATTEMPT'] . PHP_EOL;
file_put_contents($log, $line, FILE_APPEND | LOCK_EX);
