"""The body encoder against PHP's own http_build_query(json_decode($m, true))."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from asyncphp.wire.body import BadMessage, Limits, form_body, nesting, php_float, urlencode

# Raw JSON, so duplicate keys and exact number literals reach both sides unchanged.
PAYLOADS = [
    '{"timestamp": "2026-11-27T14:01:18+00:00"}',
    '{"a": "x y"}',
    '{"a": "~*\'()!"}',
    '{"a": "é😀 ☃"}',
    '{"a": "\\ud83d\\ude00"}',
    '{"a b": "c", "k=y&z": "v"}',
    '{"a[b]": "x", "c]": "d"}',
    '{"": "empty key"}',
    '{"a": true, "b": false}',
    '{"a": null, "b": 1}',
    '{"a": [], "b": {}, "c": [[[]]], "d": "kept"}',
    '{"a": [1, 2, 3]}',
    '{"a": {"b": {"c": "d"}}}',
    '{"a": [{"b": 1}, {"c": [true, null, "x"]}]}',
    '{"a": {"0": "x", "1": "y"}, "1": "one", "0": "zero"}',
    '{"dup": 1, "x": 0, "dup": 2}',
    '{"a": "", "b": " ", "c": "  two  "}',
    '{"a": "line\\nbreak\\ttab\\u0000nul\\r"}',
    '{"a": "+%&=#?/\\\\;:@$,"}',
    '{"a": -5, "b": 0, "c": -0, "d": 42}',
    '{"a": 0.1, "b": 1.0, "c": -0.0, "d": 0.30000000000000004}',
    '{"a": 1e100, "b": 1.5e-7, "c": 2.5e20, "d": -1.2345678901234567e-10}',
    '{"a": 0.0001, "b": 1e-5, "c": 0.00012345}',
    '{"a": 1e13, "b": 1e14, "c": 1e15, "d": 99999999999999.99}',
    '{"a": 123456789.12345678, "b": 3.141592653589793, "c": 1.0000000000000002}',
    '{"a": 9223372036854775807, "b": -9223372036854775808}',
    '{"a": 9223372036854775808, "b": -9223372036854775809, "c": 12345678901234567890}',
    '{"a": 1e400, "b": -1e400}',
    '{"a": 1' + "0" * 400 + ', "b": -1' + "0" * 400 + "}",  # integers past float's range
    # Past Python's 4,300-digit limit for int(): json_decode() makes INF of them, so must we.
    '{"a": 9' + "9" * 5000 + ', "b": -' + "1" * 4400 + ', "c": [' + "7" * 4301 + "]}",
    '{"a": 5e-324, "b": 1.7976931348623157e308, "c": 2.2250738585072014e-308}',
    '{"a": 100.0, "b": 1234567.0, "c": 0.5, "d": 1e1}',
    '{"nested": {"list": [{"deep": {"deeper": [1, [2, [3]]]}}]}}',
    '{"ключ": "значение", "键": "值"}',
    '{"a": "\\u00e9", "b": "e\\u0301"}',
    '{"html": "<b>\\"quoted\\"</b> & \'apos\'"}',
    '{"url": "https://example.com/path?q=1&r=two#frag"}',
    '{"long": "' + "x" * 5000 + '"}',
]

PHP_ENCODE = r"""
$out = [];
foreach (json_decode(stream_get_contents(STDIN), true) as $m) {
    $out[] = base64_encode(http_build_query(json_decode($m, true)));
}
echo json_encode($out);
"""


@pytest.fixture(scope="module")
def php_bodies(php: str) -> list[bytes]:
    done = subprocess.run(
        [php, "-r", PHP_ENCODE], input=json.dumps(PAYLOADS).encode(), capture_output=True, check=True
    )

    return [base64.b64decode(b) for b in json.loads(done.stdout)]


@pytest.mark.parametrize("index", range(len(PAYLOADS)))
def test_matches_php_http_build_query(index: int, php_bodies: list[bytes]) -> None:
    assert form_body(PAYLOADS[index].encode()) == php_bodies[index]


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (0.1, "0.1"),
        (1e15, "1.0E+15"),
        (1e-5, "1.0E-5"),
        (0.0001, "0.0001"),
    ],
)
def test_php_float(value: float, printed: str) -> None:
    assert php_float(value) == printed


def test_urlencode_is_rfc1738() -> None:
    assert urlencode(b"a b~-_.*") == b"a+b%7E-_.%2A"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'"text"', "not an object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": Infinity}', "not JSON"),
        (b'{"a": "\\ud800"}', "surrogate"),
    ],
)
def test_bad_messages_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        form_body(payload)


UNLIMITED = Limits(max_bytes=1 << 30, max_nesting=1 << 20, max_fields=1 << 20)


def nested(lists: int) -> bytes:
    return b'{"a": ' + b"[" * lists + b"]" * lists + b"}"


def test_nesting_is_limited_where_json_decode_limits_it(php: str) -> None:
    assert nesting({"a": [1, {"b": []}]}) == 4
    accepted = "var_dump(json_decode(stream_get_contents(STDIN), true) !== null);"
    for lists, ok in ((510, True), (511, False)):
        done = subprocess.run([php, "-r", accepted], input=nested(lists), capture_output=True, check=True)
        assert done.stdout.strip() == (b"bool(true)" if ok else b"bool(false)")
        if ok:
            assert form_body(nested(lists), UNLIMITED) == b""
        else:
            with pytest.raises(BadMessage, match="nested deeper than json_decode"):
                form_body(nested(lists), UNLIMITED)


def test_nesting_past_the_recursion_limit_is_rejected_not_a_crash() -> None:
    for lists in (5_000, 100_000):
        with pytest.raises(BadMessage, match="nested deeper than json_decode"):
            form_body(nested(lists))


def test_limits_mirror_php_input_limits(php: str) -> None:
    limits = Limits(max_bytes=100, max_nesting=3, max_fields=4)
    assert form_body(b'{"a": {"b": {"c": {"d": 1}}}}', limits) == b"a%5Bb%5D%5Bc%5D%5Bd%5D=1"
    with pytest.raises(BadMessage, match=r"nested 4 levels deep, over max_input_nesting_level \(3\)"):
        form_body(b'{"a": {"b": {"c": {"d": {"e": 1}}}}}', limits)
    assert form_body(b'{"a": [1, 2, 3], "b": "x&y"}', limits).count(b"&") == 3
    with pytest.raises(BadMessage, match=r"5 fields, over max_input_vars \(4\)"):
        form_body(b'{"a": [1, 2, 3, 4, 5]}', limits)
    with pytest.raises(BadMessage, match=r"101 bytes, over max_message_bytes \(100\)"):
        form_body(b'{"a": "' + b"x" * 92 + b'"}', limits)


def test_default_limits_are_phps_defaults(php: str) -> None:
    # PHP drops a field nested past max_input_nesting_level and stops after max_input_vars.
    show = 'echo ini_get("max_input_nesting_level"), " ", ini_get("max_input_vars");'
    levels, fields = subprocess.run(
        [php, "-r", show], capture_output=True, text=True, check=True
    ).stdout.split()
    assert (Limits().max_nesting, Limits().max_fields) == (int(levels), int(fields))
