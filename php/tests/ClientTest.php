<?php

declare(strict_types=1);

namespace Asyncphp\Tests;

use Asyncphp\AsyncphpException;
use Asyncphp\Client;
use Asyncphp\Limits;
use Asyncphp\Payload;
use PHPUnit\Framework\TestCase;

/**
 * The client against a real Redis (ASYNCPHP_TEST_REDIS), through phpredis and through Predis:
 * each test runs once per client.
 */
final class ClientTest extends TestCase
{
    /** @return array<string, array{string}> */
    public static function clients(): array
    {
        return ['phpredis' => ['phpredis'], 'predis' => ['predis']];
    }

    private static function address(): array
    {
        $address = getenv('ASYNCPHP_TEST_REDIS');
        if ($address === false || $address === '') {
            self::fail('ASYNCPHP_TEST_REDIS is not set: the test command starts a Redis and sets it');
        }
        [$host, $port] = explode(':', $address);
        return [$host, (int) $port];
    }

    private static function redis(): \Redis
    {
        [$host, $port] = self::address();
        $redis = new \Redis();
        $redis->connect($host, $port, 2.0);
        return $redis;
    }

    private static function connect(string $kind): \Redis|\Predis\Client
    {
        if ($kind === 'phpredis') {
            return self::redis();
        }
        [$host, $port] = self::address();
        return new \Predis\Client(['host' => $host, 'port' => $port, 'timeout' => 2.0]);
    }

    protected function setUp(): void
    {
        self::redis()->flushDb();
    }

    // Payloads, checked as the daemon checks them.

    public function testAPayloadIsTheJsonThePythonCallerWrites(): void
    {
        $this->assertSame('{}', Payload::encode([]));
        $this->assertSame(
            '{"a":"é/✓","b":[1,2.0,null,true],"c":{"d":"\u0001\n"},"e":"' . "\u{2028}" . '"}',
            Payload::encode(['a' => 'é/✓', 'b' => [1, 2.0, null, true], 'c' => ['d' => "\x01\n"], 'e' => "\u{2028}"])
        );
    }

    /** @return array<string, array{array<mixed>, Limits, string}> */
    public static function refused(): array
    {
        $deep = ['x' => 1];
        for ($i = 0; $i < 5; $i++) {
            $deep = ['x' => $deep];
        }
        return [
            'a list' => [[1, 2], new Limits(), 'a JSON object (string keys), not a list'],
            'too large' => [['x' => str_repeat('a', 100)], new Limits(maxBytes: 50), 'over max_message_bytes (50)'],
            'too deep' => [$deep, new Limits(maxNesting: 3), 'nested 5 levels deep, over max_input_nesting_level (3)'],
            'too wide' => [['x' => range(1, 20)], new Limits(maxFields: 10), '20 form fields, over max_input_vars'],
            'not UTF-8' => [['x' => "\xff"], new Limits(), 'cannot be JSON: Malformed UTF-8'],
            'infinite' => [['x' => INF], new Limits(), 'cannot be JSON: Inf and NaN'],
        ];
    }

    /**
     * @dataProvider refused
     * @param array<mixed> $payload
     */
    public function testAPayloadTheDaemonWouldSkipIsRefusedWithOneClearLine(
        array $payload,
        Limits $limits,
        string $message
    ): void {
        try {
            Payload::encode($payload, $limits);
        } catch (AsyncphpException $e) {
            $this->assertStringContainsString($message, $e->getMessage());
            $this->assertStringNotContainsString("\n", $e->getMessage());
            return;
        }
        $this->fail('accepted');
    }

    // Pub/sub.

    /** @dataProvider clients */
    public function testPublishSaysHowManyReceivedItAndCanThrowWhenNobodyDid(string $kind): void
    {
        $this->assertSame(0, (new Client(self::connect($kind)))->publish(['user' => 42]));
        $this->expectException(AsyncphpException::class);
        $this->expectExceptionMessage("nobody is subscribed to 'mail': the message was dropped");
        (new Client(self::connect($kind), throwWhenDropped: true))->publish(['user' => 42], 'mail');
    }

    // The durable mode.

    /** @dataProvider clients */
    public function testAStreamPublishAddsAnEntryWithThePayload(string $kind): void
    {
        $id = (new Client(self::connect($kind)))->stream('mail')->publish(['user' => 42]);
        $this->assertMatchesRegularExpression('/^\d+-\d+$/', $id);
        $this->assertSame([$id => ['payload' => '{"user":42}']], self::redis()->xRange('mail', '-', '+'));
    }

    /** @dataProvider clients */
    public function testADelayedJobWaitsBesideTheStream(string $kind): void
    {
        $done = (new Client(self::connect($kind)))->stream('mail')->delay(60)->enqueue(['user' => 42]);
        $this->assertSame('d1', $done->id);
        $this->assertTrue($done->added);
        $this->assertNotNull($done->dueAt);
        $redis = self::redis();
        $this->assertSame(0, $redis->xLen('mail'));
        $score = $redis->zScore('mail:delayed', 'd1');
        $this->assertSame((float) $done->dueAt->format('Uv'), $score);
        $this->assertEqualsWithDelta(time() + 60, $score / 1000, 5);
        $this->assertSame('{"user":42}', $redis->hGet('mail:delayed:jobs', 'd1'));
    }

    /** @dataProvider clients */
    public function testATimeInThePastRunsNowWithTheTimeAskedFor(string $kind): void
    {
        $when = new \DateTimeImmutable('2020-01-01T01:00:00+01:00');
        $id = (new Client(self::connect($kind)))->stream('mail')->at($when)->publish(['user' => 42]);
        $entry = self::redis()->xRange('mail', $id, $id)[$id];
        $this->assertSame('1577836800.000', $entry['due_at']);
    }

    /** @dataProvider clients */
    public function testASecondUniqueJobIsNotAddedAndGetsTheFirstOnesId(string $kind): void
    {
        $mail = (new Client(self::connect($kind)))->stream('mail');
        $first = $mail->unique('welcome:42', 600)->enqueue(['user' => 42]);
        $second = $mail->unique('welcome:42', 600)->enqueue(['user' => 42]);
        $this->assertTrue($first->added);
        $this->assertFalse($second->added);
        $this->assertSame($first->id, $second->id);
        $this->assertSame($first->id, $mail->unique('welcome:42')->publish(['user' => 42]));
        $redis = self::redis();
        $this->assertSame(1, $redis->xLen('mail'));
        $this->assertSame(
            ['payload' => '{"user":42}', 'unique' => 'mail:unique:welcome:42'],
            $redis->xRange('mail', '-', '+')[$first->id]
        );
        $ttl = $redis->ttl('mail:unique:welcome:42');
        $this->assertGreaterThan(590, $ttl);
        $this->assertLessThanOrEqual(600, $ttl);
        // Until expiry: no guard for the daemon to release.
        $expiring = $mail->unique('report', 60, 'expiry')->publish(['r' => 1]);
        $this->assertArrayNotHasKey('unique', $redis->xRange('mail', $expiring, $expiring)[$expiring]);
    }

    /** @dataProvider clients */
    public function testTheScriptIsLoadedWhenRedisHasForgottenIt(string $kind): void
    {
        $mail = (new Client(self::connect($kind)))->stream('mail')->delay(1);
        $this->assertSame('d1', $mail->publish(['n' => 1]));
        self::redis()->script('flush');
        $this->assertSame('d2', $mail->publish(['n' => 2]));
    }

    /** @dataProvider clients */
    public function testMaxlenTrimsTheStream(string $kind): void
    {
        $mail = (new Client(self::connect($kind)))->stream('mail')->maxlen(1);
        for ($i = 0; $i < 300; $i++) {
            $mail->publish(['n' => $i]);
        }
        $this->assertLessThan(300, self::redis()->xLen('mail'));
    }

    /** @dataProvider clients */
    public function testRedisRefusingIsOneException(string $kind): void
    {
        self::redis()->set('mail', 'not a stream');
        $this->expectException(AsyncphpException::class);
        $this->expectExceptionMessageMatches('/^redis refused XADD: WRONGTYPE/');
        (new Client(self::connect($kind)))->stream('mail')->publish(['n' => 1]);
    }

    public function testTheAppsPrefixAndSerializerAreSetAsideAndPutBack(): void
    {
        $redis = self::redis();
        $redis->setOption(\Redis::OPT_PREFIX, 'app:');
        $redis->setOption(\Redis::OPT_SERIALIZER, \Redis::SERIALIZER_PHP);
        $client = new Client($redis);
        $id = $client->stream('mail')->publish(['user' => 42]);
        $delayed = $client->stream('mail')->delay(60)->unique('k', 60)->publish(['user' => 43]);
        $this->assertSame('app:', $redis->getOption(\Redis::OPT_PREFIX), 'put back');
        $this->assertSame(\Redis::SERIALIZER_PHP, $redis->getOption(\Redis::OPT_SERIALIZER));
        $plain = self::redis();
        $this->assertSame([$id => ['payload' => '{"user":42}']], $plain->xRange('mail', '-', '+'));
        $this->assertSame('{"user":43}', $plain->hGet('mail:delayed:jobs', $delayed));
        $this->assertSame(0, $plain->exists('app:mail'));
    }

    public function testTheDaemonsOwnKeyIsNotCountedAgainstTheFormLimits(): void
    {
        $fields = [];
        for ($i = 0; $i < 10; $i++) {
            $fields["f$i"] = $i;
        }
        $json = Payload::encode($fields, new Limits(maxFields: 10), ['release' => 'r1']);
        $this->assertStringEndsWith(',"_asyncphp":{"release":"r1"}}', $json);
        $this->expectExceptionMessage("the key '_asyncphp' is the daemon's own");
        Payload::encode(['_asyncphp' => 1]);
    }

    public function testMultiModeIsRefusedWithTheOneException(): void
    {
        $redis = self::redis();
        $redis->multi();
        try {
            $this->expectException(AsyncphpException::class);
            $this->expectExceptionMessage('MULTI or pipeline mode');
            (new Client($redis))->stream('mail')->publish(['n' => 1]);
        } finally {
            $redis->discard();
        }
    }

    public function testBadArgumentsAreRefusedBeforeRedisIsAsked(): void
    {
        $mail = (new Client(self::redis()))->stream('mail');
        $calls = [
            fn () => $mail->delay(-1),
            fn () => $mail->delay(INF),
            fn () => $mail->unique('', 60),
            fn () => $mail->unique('k', 0),
            fn () => $mail->unique('k', 0.0004),
            fn () => $mail->unique('k', 1e12),
            fn () => $mail->unique('k', 60, 'forever'),
            fn () => $mail->maxlen(0),
            fn () => (new Client(self::redis()))->stream(''),
        ];
        foreach ($calls as $i => $call) {
            try {
                $call();
                $this->fail("case $i accepted");
            } catch (AsyncphpException) {
                $this->addToAssertionCount(1);
            }
        }
    }

    public function testAnUnreachableRedisIsOneException(): void
    {
        $redis = new \Predis\Client(['host' => '127.0.0.1', 'port' => 1, 'timeout' => 0.5]);
        $this->expectException(AsyncphpException::class);
        $this->expectExceptionMessageMatches('/^redis: PUBLISH failed: /');
        (new Client($redis))->publish(['n' => 1]);
    }
}
