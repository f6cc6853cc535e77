<?php
// Copied into each release directory of the release tests: "<the release directory it ran from>
// <ASYNCPHP_RELEASE> <n> <HTTP_TRACEPARENT or ->" per job, so that a test can tell which code ran.
file_put_contents(
    getenv('ASYNCPHP_WORKER_LOG'),
    sprintf(
        "%s %s %s %s\n",
        basename(__DIR__), $_SERVER['ASYNCPHP_RELEASE'] ?? '-', $_POST['n'] ?? '-', $_SERVER['HTTP_TRACEPARENT'] ?? '-'
    ),
    FILE_APPEND | LOCK_EX
);
