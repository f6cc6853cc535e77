<?php
// A test worker that records what it was given: one JSON line per job with its channel, $_POST,
// message id and due time.
file_put_contents(
    getenv('ASYNCPHP_WORKER_LOG'),
    json_encode([
        'channel' => $_SERVER['ASYNCPHP_CHANNEL'],
        'post' => $_POST,
        'message_id' => $_SERVER['ASYNCPHP_MESSAGE_ID'] ?? null,
        'due_at' => $_SERVER['ASYNCPHP_DUE_AT'] ?? null,
    ]) . PHP_EOL,
    FILE_APPEND | LOCK_EX
);
