"""A message → the form body PHP's ``http_build_query(json_decode($message, true))`` makes of it.

The worker reads ``$_POST``, so the body must be byte-for-byte what the original daemon sent:
``http_build_query(json_decode($message, true))`` with PHP 8's defaults (``precision = 14``,
``arg_separator.output = "&"``, RFC 1738 encoding).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asyncphp.wire import meta

# PHP's urlencode() leaves exactly these bytes alone and turns the space into "+".
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_QUOTED = tuple(chr(b).encode() if b in _SAFE else (b"+" if b == 0x20 else b"%%%02X" % b) for b in range(256))
_PHP_INT_MIN, _PHP_INT_MAX = -(2**63), 2**63 - 1
_PHP_PRECISION = 14  # php.ini "precision": http_build_query() prints floats with it, not serialize_precision
JSON_MAX_DEPTH = 512  # json_decode()'s default $depth


def urlencode(raw: bytes) -> bytes:
    """PHP's ``urlencode()``."""
    return b"".join([_QUOTED[b] for b in raw])


def php_float(value: float) -> str:
    """A float as PHP prints it with ``precision = 14`` (``php_gcvt(value, 14, '.', 'E')``)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    mantissa, _, exponent = f"{value:.{_PHP_PRECISION - 1}e}".partition("e")
    negative = mantissa.startswith("-")
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    point = int(exponent) + 1 if digits != "0" else 1  # zend_dtoa's decpt: digits before the point
    sign = "-" if negative else ""
    if (point < -3) if point < 0 else (point > _PHP_PRECISION):
        exp = point - 1
        return f"{sign}{digits[0]}.{digits[1:] or '0'}E{'-' if exp < 0 else '+'}{abs(exp)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    whole, fraction = digits[:point].ljust(point, "0"), digits[point:]
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


def _scalar(value: Any) -> bytes | None:
    # Mirrors json_decode($m, true) followed by http_build_query's scalar handling.
    if value is None:
        return None
    if value is True:
        return b"1"
    if value is False:
        return b"0"
    if isinstance(value, int):
        if _PHP_INT_MIN <= value <= _PHP_INT_MAX:
            return str(value).encode()
        # json_decode() turns an integer PHP cannot hold into a float, INF past float's range.
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf if value > 0 else -math.inf
        return urlencode(php_float(as_float).encode())
    if isinstance(value, float):
        return urlencode(php_float(value).encode())
    if isinstance(value, str):
        return urlencode(value.encode())
    raise TypeError(f"cannot form-encode a value of type {type(value).__name__}")


def _pairs(prefix: bytes, value: Any) -> Iterator[bytes]:
    items: Iterator[tuple[Any, Any]]
    if isinstance(value, Mapping):
        items = iter(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = enumerate(value)
    else:
        encoded = _scalar(value)
        if encoded is not None:
            yield prefix + b"=" + encoded
        return
    for key, item in items:
        yield from _pairs(prefix + b"%5B" + urlencode(str(key).encode()) + b"%5D", item)


def http_build_query(data: Mapping[str, Any]) -> bytes:
    """Encode a decoded JSON object exactly as PHP's ``http_build_query()`` would.

    Nested objects and lists become ``a%5Bb%5D%5B0%5D=…``, ``true``/``false`` become ``1``/``0``,
    ``null`` and empty containers are dropped, floats print with 14 significant digits.

    Raises:
        TypeError: for a value JSON cannot produce.
        UnicodeEncodeError: for a string holding a lone surrogate (PHP's json_decode rejects it).
    """
    parts: list[bytes] = []
    for key, value in data.items():
        parts.extend(_pairs(urlencode(str(key).encode()), value))
    return b"&".join(parts)


class BadMessage(ValueError):
    """A message that cannot become a form body; the text says why."""


def nesting(value: Any) -> int:
    """How deeply objects and lists nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def decode_message(payload: bytes) -> dict[str, Any]:
    """The JSON object in ``payload``, accepted only where PHP's ``json_decode()`` accepts it
    (see :func:`form_body` for its depth limit)."""
    try:
        text = payload.decode("utf-8")
        if text.startswith("\ufeff"):  # json.loads says so; a decoder's decode() does not check
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        try:
            value = _decode(text)
        except ValueError as exc:
            if "integer string conversion" not in str(exc):
                raise
            # Python refuses integers of over 4,300 digits (sys.get_int_max_str_digits());
            # json_decode() makes a float of them, INF here. Only such messages pay for parse_int.
            value = _decode_big_ints(text)
    except UnicodeDecodeError as exc:
        raise BadMessage(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise BadMessage(f"nested deeper than json_decode() accepts ({JSON_MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise BadMessage(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BadMessage(f"JSON {type(value).__name__}, not an object")
    return value


def _php_int(digits: str) -> int | float:
    if len(digits.lstrip("-")) <= 4300:
        return int(digits)
    return float(digits)  # past any float too: inf, as json_decode() gives


def reject_json_constant(name: str) -> Any:
    """For json's parse_constant: Python's json takes NaN and Infinity; JSON (and PHP) do not."""
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads with any keyword argument builds a new decoder per call.
_decode = json.JSONDecoder(parse_constant=reject_json_constant).decode
_decode_big_ints = json.JSONDecoder(parse_constant=reject_json_constant, parse_int=_php_int).decode


@dataclass(frozen=True)
class Limits:
    """What a message may be; beyond PHP's own limits the worker would get a truncated ``$_POST``."""

    max_bytes: int = 1 << 20
    max_nesting: int = 64  # php.ini max_input_nesting_level: brackets in a field name
    max_fields: int = 1000  # php.ini max_input_vars


DEFAULT_LIMITS = Limits()  # php.ini's defaults


def form_body(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The form body for one message: what the worker will find in ``$_POST``.

    Raises:
        BadMessage: too large, not UTF-8, not JSON, not an object, nested or wide beyond what
            PHP would take, or holding a string PHP would refuse.
    """
    return message_body(payload, limits)[0]


def message_body(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, meta.Meta, list[str]]:
    """The form body for one message, and what its publisher said besides (``asyncphp.wire.meta``,
    taken out of it), and what of that was dropped as malformed.

    Raises:
        BadMessage: as :func:`form_body`, or a release id that names no release directory.
    """
    if len(payload) > limits.max_bytes:
        raise BadMessage(f"{len(payload)} bytes, over max_message_bytes ({limits.max_bytes})")
    data = decode_message(payload)
    found, dropped = meta.NONE, list[str]()
    if meta.KEY in data:
        try:
            found, dropped = meta.take(data)
        except meta.BadRelease as exc:
            raise BadMessage(str(exc)) from None
    # Each level of nesting takes a "{" or "[" (strings may hold more): a payload with few of them
    # cannot be too deep, and most messages skip the walk through their structure.
    if payload.count(b"{") + payload.count(b"[") > min(limits.max_nesting, JSON_MAX_DEPTH - 2):
        depth = nesting(data)
        # json_decode() counts the values inside the deepest container as one more level.
        if depth + 1 > JSON_MAX_DEPTH:
            raise BadMessage(f"nested deeper than json_decode() accepts ({JSON_MAX_DEPTH} levels)")
        if depth - 1 > limits.max_nesting:  # the top-level object's keys carry no brackets
            raise BadMessage(
                f"nested {depth - 1} levels deep, over max_input_nesting_level ({limits.max_nesting})"
            )
    try:
        body = http_build_query(data)
    except UnicodeEncodeError:
        raise BadMessage("a string holds an unpaired UTF-16 surrogate") from None
    fields = body.count(b"&") + 1 if body else 0  # a "&" inside a value is encoded as %26
    if fields > limits.max_fields:
        raise BadMessage(f"{fields} fields, over max_input_vars ({limits.max_fields})")
    return body, found, dropped
