<?php
// Runs calls of the PHP client for the Python tests: php client_calls.php <phpredis|predis>
// <host:port> <calls as JSON>, each call {"op": "publish"|"stream", "payload": {…}, "channel",
// "stream", "delay", "at" (ISO 8601), "unique": [key, for, until], "release", "trace": [traceparent,
// tracestate]}. Prints one JSON line per call:
// {"result": …} or {"error": message}.
declare(strict_types=1);

require __DIR__ . '/../../php/autoload.php';
require_once '/usr/share/php/Predis/Autoloader.php';
Predis\Autoloader::register();

[, $kind, $address, $calls] = $argv;
[$host, $port] = explode(':', $address);
if ($kind === 'phpredis') {
    $redis = new Redis();
    $redis->connect($host, (int) $port, 2.0);
} else {
    $redis = new Predis\Client(['host' => $host, 'port' => (int) $port]);
}
$client = new Asyncphp\Client($redis);
foreach (json_decode($calls, true, 512, JSON_THROW_ON_ERROR) as $call) {
    try {
        $trace = $call['trace'] ?? ['', ''];
        if ($call['op'] === 'publish') {
            $publisher = isset($call['release']) ? new Asyncphp\Client($redis, release: $call['release']) : $client;
            $result = $publisher->publish($call['payload'], $call['channel'] ?? 'commands', ...$trace);
        } else {
            $stream = $client->stream($call['stream'] ?? 'commands');
            if (isset($call['release'])) {
                $stream = $stream->release($call['release']);
            }
            if (isset($call['trace'])) {
                $stream = $stream->trace(...$trace);
            }
            if (isset($call['delay'])) {
                $stream = $stream->delay($call['delay']);
            }
            if (isset($call['at'])) {
                $stream = $stream->at(new DateTimeImmutable($call['at']));
            }
            if (isset($call['unique'])) {
                $stream = $stream->unique(...$call['unique']);
            }
            $done = $stream->enqueue($call['payload']);
            $result = ['id' => $done->id, 'added' => $done->added, 'due' => $done->dueAt?->format('U.v')];
        }
        echo json_encode(['result' => $result]), "\n";
    } catch (Asyncphp\AsyncphpException $e) {
        echo json_encode(['error' => $e->getMessage()]), "\n";
    }
}
