<?php

declare(strict_types=1);

namespace Asyncphp;

/**
 * A payload → the JSON the daemon reads, checked as the daemon checks it.
 *
 * The JSON is what the Python caller writes for the same data, byte for byte: keys in order, no
 * spaces, UTF-8 and "/" unescaped, floats with their fraction (1.0). The worker receives it as
 * $_POST, through json_decode() and http_build_query(), so the checks run exactly those.
 */
final class Payload
{
    private const FLAGS = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_LINE_TERMINATORS
        | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR;
    private const JSON_MAX_DEPTH = 512; // json_decode()'s default depth, as the daemon counts it
    /** The daemon's own key: what it should know besides the payload (release, trace context). */
    public const META_KEY = '_asyncphp';
    private const RELEASE = '/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/D';
    // W3C: version 00 exactly; a later one (not ff) may carry more after another dash.
    private const TRACEPARENT = '/^(?:00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}'
        . '|(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:-[\x20-\x7e]*)?)$/D';

    /**
     * @param array<mixed> $payload an associative array (or an empty one): a JSON object
     * @param array{release?: string, traceparent?: string, tracestate?: string} $meta
     * @throws AsyncphpException the payload is not a JSON object, or the daemon would skip it
     */
    public static function encode(array $payload, Limits $limits = new Limits(), array $meta = []): string
    {
        if ($payload !== [] && array_is_list($payload)) {
            throw new AsyncphpException('the payload must be a JSON object (string keys), not a list');
        }
        if (array_key_exists(self::META_KEY, $payload)) {
            throw new AsyncphpException(
                "the key '" . self::META_KEY . "' is the daemon's own: a payload cannot hold it"
            );
        }
        $meta = self::meta($meta);
        if ($meta !== []) {
            $payload[self::META_KEY] = $meta;
        }
        try {
            $json = $payload === [] ? '{}' : json_encode($payload, self::FLAGS);
        } catch (\JsonException $e) {
            throw new AsyncphpException('the payload cannot be JSON: ' . $e->getMessage(), 0, $e);
        }
        $bytes = strlen($json);
        if ($bytes > $limits->maxBytes) {
            throw new AsyncphpException(
                sprintf('the payload is %d bytes, over max_message_bytes (%d)', $bytes, $limits->maxBytes)
            );
        }
        // What the worker's $_POST will be made of: the daemon decodes it the same way, and takes
        // its own key out before counting.
        $decoded = json_decode($json, true, self::JSON_MAX_DEPTH);
        if (!is_array($decoded)) {
            throw new AsyncphpException('the payload is nested deeper than json_decode() accepts (512 levels)');
        }
        unset($decoded[self::META_KEY]);
        $depth = self::nesting($decoded);
        if ($depth - 1 > $limits->maxNesting) {
            throw new AsyncphpException(sprintf(
                'the payload is nested %d levels deep, over max_input_nesting_level (%d)',
                $depth - 1,
                $limits->maxNesting,
            ));
        }
        $body = http_build_query($decoded);
        $fields = $body === '' ? 0 : substr_count($body, '&') + 1;
        if ($fields > $limits->maxFields) {
            throw new AsyncphpException(
                sprintf('the payload has %d form fields, over max_input_vars (%d)', $fields, $limits->maxFields)
            );
        }
        return $json;
    }

    /**
     * The release and trace context, checked, in the order the Python caller writes them.
     *
     * @param array{release?: string, traceparent?: string, tracestate?: string} $meta
     * @return array<string, string>
     */
    private static function meta(array $meta): array
    {
        $release = $meta['release'] ?? '';
        if ($release !== '' && preg_match(self::RELEASE, $release) !== 1) {
            throw new AsyncphpException(
                "release '$release' is not a release id: letters, digits, '.', '_', '-'; 64 at most"
            );
        }
        $traceparent = $meta['traceparent'] ?? '';
        if ($traceparent !== '' && (strlen($traceparent) > 512 || preg_match(self::TRACEPARENT, $traceparent) !== 1)) {
            throw new AsyncphpException(
                "traceparent '$traceparent' is not W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>"
            );
        }
        $tracestate = $traceparent === '' ? '' : ($meta['tracestate'] ?? '');
        return array_filter(
            ['release' => $release, 'traceparent' => $traceparent, 'tracestate' => $tracestate],
            fn (string $value) => $value !== '',
        );
    }

    /** How deeply arrays nest in $value (the top-level array is 1), without recursion. */
    private static function nesting(array $value): int
    {
        $deepest = 0;
        $stack = [[$value, 1]];
        while ($stack !== []) {
            [$item, $depth] = array_pop($stack);
            $deepest = max($deepest, $depth);
            foreach ($item as $child) {
                if (is_array($child)) {
                    $stack[] = [$child, $depth + 1];
                }
            }
        }
        return $deepest;
    }
}
