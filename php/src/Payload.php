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

    /**
     * @param array<mixed> $payload an associative array (or an empty one): a JSON object
     * @throws AsyncphpException the payload is not a JSON object, or the daemon would skip it
     */
    public static function encode(array $payload, Limits $limits = new Limits()): string
    {
        if ($payload !== [] && array_is_list($payload)) {
            throw new AsyncphpException('the payload must be a JSON object (string keys), not a list');
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
        // What the worker's $_POST will be made of: the daemon decodes it the same way.
        $decoded = json_decode($json, true, self::JSON_MAX_DEPTH);
        if (!is_array($decoded)) {
            throw new AsyncphpException('the payload is nested deeper than json_decode() accepts (512 levels)');
        }
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
