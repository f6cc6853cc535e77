<?php
// A test worker for the durable mode's fault tests. Two lines per run in the worker log:
// "start n message-id attempt" on arrival, "end n message-id attempt status" just before it answers.
// Fields of the message: "sleep" seconds before answering; "status" to answer instead of 200, for
// the first "fail" attempts (every attempt when "fail" is absent).
$log = getenv('ASYNCPHP_WORKER_LOG');
$n = $_POST['n'] ?? '-';
$id = $_SERVER['ASYNCPHP_MESSAGE_ID'];
$attempt = (int) $_SERVER['ASYNCPHP_ATTEMPT'];
$note = function (string $line) use ($log) { file_put_contents($log, $line . PHP_EOL, FILE_APPEND | LOCK_EX); };

$note("start $n $id $attempt");
usleep((int) (((float) ($_POST['sleep'] ?? 0)) * 1000000));
$status = (int) ($_POST['status'] ?? 200);
if ($status !== 200 && $attempt <= (int) ($_POST['fail'] ?? PHP_INT_MAX)) {
    error_log("failing on purpose with $status, attempt $attempt");
    http_response_code($status);
} else {
    $status = 200;
}
$note("end $n $id $attempt $status");
