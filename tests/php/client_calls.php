<?php
// Runs calls of the PHP client for the Python tests: php client_calls.php <phpredis|predis>
// <host:port> <calls as JSON>, or <phpredis-cluster|predis-cluster> <host:port,…>, each call {"op": "publish"|"stream", "payload": {…}, "channel",
// "stream", "delay", "at" (ISO 8601), "unique": [key, for, until], "release", "trace": [traceparent,
// tracestate]}. Prints one JSON line per call:
// {"result": …} or {"error": message}.
declare(strict_types=1);

require __DIR__ . '/../../php/autoload.php';
require_once '/usr/share/php/Predis/Autoloader.php';
Predis\Autoloader::register();

[, $kind, $address, $calls] = $argv;
// A cluster: <phpredis-cluster|predis-cluster> and its seeds, host:port,host:port….
$seeds = explode(',', $address);
[$host, $port] = explode(':', $seeds[0]);
$redis = match ($kind) {
    'phpredis' => new Redis(),
    'predis' => new Predis\Client(['host' => $host, 'port' => (int) $port]),
    'phpredis-cluster' => new RedisCluster(null, $seeds, 2.0, 2.0),
    'predis-cluster' => new Predis\Client(array_map(fn ($s) => "tcp://$s", $seeds), ['cluster' => 'redis']),
};
if ($redis instanceof Redis) {
    $redis->connect($host, (int) $port, 2.0);
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
