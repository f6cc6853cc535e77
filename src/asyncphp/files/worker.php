<?php
// The reference asyncphp worker: the original's job, append the timestamp it was given to a log,
// then take a second. The daemon POSTs each message as a form, so the fields are in $_POST;
// $_SERVER['ASYNCPHP_REQUEST_ID'] and $_SERVER['ASYNCPHP_CHANNEL'] say which job this is.
//
// The log path comes from the pool (env[ASYNCPHP_WORKER_LOG] in commands.conf), because
// php-fpm clears the environment of its workers.

$log = getenv('ASYNCPHP_WORKER_LOG') ?: sys_get_temp_dir() . '/asyncphp-worker.log';
$timestamp = $_POST['timestamp'] ?? '(no timestamp)';

file_put_contents($log, $timestamp . PHP_EOL, FILE_APPEND | LOCK_EX);
sleep(1);
