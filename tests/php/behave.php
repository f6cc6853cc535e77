<?php
// A test worker whose behaviour the message picks with its "do" field.
$log = getenv('ASYNCPHP_WORKER_LOG');
$note = function (string $line) use ($log) { file_put_contents($log, $line . PHP_EOL, FILE_APPEND | LOCK_EX); };

switch ($_POST['do'] ?? 'note') {
    case 'note':
        $note($_POST['text'] ?? '');
        break;
    case 'output':
        // More than any buffer: PHP aborts here if the daemon has closed the connection.
        echo str_repeat('x', (int) $_POST['bytes']);
        flush();
        $note('output done ' . $_POST['bytes']);
        break;
    case 'fatal':
        $note('fatal start');
        undefined_function_for_asyncphp_tests();
        break;
    case 'status':
        http_response_code((int) $_POST['code']);
        error_log('answered ' . $_POST['code']);
        break;
    case 'slow':
        // Long enough for a test to kill this child before it answers anything.
        $note('slow attempt ' . $_SERVER['ASYNCPHP_ATTEMPT']);
        sleep((int) ($_POST['seconds'] ?? 2));
        break;
    case 'until_file':
        // Until the test says (the file exists), 20 s at most: an end the test times, not a sleep.
        $note('until_file waiting');
        for ($i = 0; $i < 400 && !file_exists($_POST['path']); $i++) {
            usleep(50000);
        }
        $note('until_file done');
        break;
    case 'answer_then_slow':
        echo str_repeat('y', 100000);  // past the output buffer: the daemon sees the answer begin
        flush();
        $note('answered attempt ' . $_SERVER['ASYNCPHP_ATTEMPT']);
        sleep(3);
        break;
    case 'ask':
        // The worker's asks (docs/contract.md): run again in "in" s until attempt "until", then
        // answer "then" (a header line, or nothing: done).
        $attempt = (int) $_SERVER['ASYNCPHP_ATTEMPT'];
        $note(json_encode(['id' => $_POST['id'], 'attempt' => $attempt, 'at' => microtime(true),
            'entry' => $_SERVER['ASYNCPHP_MESSAGE_ID'], 'first' => $_SERVER['ASYNCPHP_FIRST_ID'] ?? '',
            'due' => $_SERVER['ASYNCPHP_DUE_AT'] ?? '']));
        if ($attempt < (int) $_POST['until']) {
            header('Asyncphp-Retry-In: ' . $_POST['in']);
        } elseif (($_POST['then'] ?? '') !== '') {
            header($_POST['then']);
            http_response_code(500);
        }
        break;
    case 'dump':
        $keys = ['REQUEST_METHOD', 'SCRIPT_FILENAME', 'SCRIPT_NAME', 'REQUEST_URI', 'CONTENT_TYPE',
                 'CONTENT_LENGTH', 'SERVER_SOFTWARE', 'GATEWAY_INTERFACE', 'QUERY_STRING',
                 'ASYNCPHP_REQUEST_ID', 'ASYNCPHP_CHANNEL'];
        $server = array_intersect_key($_SERVER, array_flip($keys));
        $note(json_encode(['post' => $_POST, 'server' => $server]));
        break;
}
