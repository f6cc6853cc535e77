"""Publish a job for the asyncphp daemon: ``publish()`` for app code, ``python -m asyncphp.caller``.

This module needs only redis-py: app code that publishes never loads the daemon, flup or systemd.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, overload

import redis

from asyncphp import redisurl
from asyncphp.redisurl import redact
from asyncphp.wire.body import reject_json_constant

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CHANNEL = "commands"
DEFAULT_MAXLEN = 1_000_000  # entries a stream keeps, approximately (XADD MAXLEN ~)
CONNECT_TIMEOUT = 2.0  # seconds, as the original caller

EXIT_DELIVERED = 0
EXIT_NO_SUBSCRIBER = 1
EXIT_USAGE = 2  # argparse's own
EXIT_BAD_PAYLOAD = 65  # sysexits EX_DATAERR
EXIT_UNREACHABLE = 69  # sysexits EX_UNAVAILABLE


@overload
def publish(
    message: Mapping[str, Any], *, channel: str = ..., redis_url: str = ..., durable: Literal[False] = ...
) -> int: ...


@overload
def publish(
    message: Mapping[str, Any],
    *,
    channel: str = ...,
    redis_url: str = ...,
    durable: Literal[True],
    maxlen: int = ...,
) -> str: ...


def publish(
    message: Mapping[str, Any],
    *,
    channel: str = DEFAULT_CHANNEL,
    redis_url: str = DEFAULT_REDIS_URL,
    durable: bool = False,
    maxlen: int = DEFAULT_MAXLEN,
) -> int | str:
    """Publish ``message`` as JSON for the daemon to hand to the pool.

    Pub/sub does not store messages: when this returns 0, nobody was subscribed and the job is
    gone. With ``durable``, the message is added to the Redis stream named ``channel`` instead,
    where it waits for a daemon reading that stream (``--stream``), and is run once.

    Args:
        message: a JSON-serialisable mapping; the worker receives it as ``$_POST``.
        channel: the Redis channel (or, with ``durable``, the stream) the daemon reads.
        redis_url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URL.
        durable: add to a stream (XADD) rather than publish.
        maxlen: with ``durable``, the stream is trimmed to about this many entries.

    Returns:
        The number of subscribers that received the message; with ``durable``, the entry id.

    Raises:
        TypeError, ValueError: ``message`` cannot be serialised to a JSON object.
        redis.RedisError: Redis is unreachable or refused the command.
    """
    payload = json.dumps(dict(message), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    client = redisurl.client(
        redis_url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT
    )
    try:
        if durable:
            entry_id = client.xadd(channel, {"payload": payload}, maxlen=maxlen, approximate=True)
            return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return int(client.publish(channel, payload))
    finally:
        client.close()


def php_date_c(now: datetime | None = None) -> str:
    """The local time as PHP's ``date('c')`` prints it: ``2026-11-27T14:01:18+00:00``."""
    return (now or datetime.now().astimezone()).isoformat(timespec="seconds")


class PayloadError(ValueError):
    """The payload given on the command line is not a JSON object."""


def build_payload(data: str | None, pairs: Sequence[str], stdin: Any = None) -> dict[str, Any]:
    """The message from ``--data`` (``-`` reads stdin) and ``key=value`` arguments, which win.

    With neither, the original caller's ``{"timestamp": date('c')}``.
    """
    if data is None and not pairs:
        return {"timestamp": php_date_c()}
    message: dict[str, Any] = {}
    if data is not None:
        text = (stdin or sys.stdin).read() if data == "-" else data
        try:
            decoded = json.loads(text, parse_constant=reject_json_constant)
        except ValueError as exc:
            raise PayloadError(f"--data is not valid JSON: {exc}") from None
        if not isinstance(decoded, dict):
            raise PayloadError(f"--data must be a JSON object, not {type(decoded).__name__}")
        message.update(decoded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PayloadError(f"argument {pair!r} is not key=value")
        message[key] = value
    return message


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncphp-publish",
        description="Publish one job for the asyncphp daemon. With no payload, publishes "
        '{"timestamp": "<now, ISO 8601>"} like the original caller.',
        epilog=f"""With --stream the message is added to that Redis stream (durable mode) and its entry
id is printed; it waits there for a daemon started with --stream.

exit status:
  {EXIT_DELIVERED}   delivered to at least one subscriber (or added to the stream)
  {EXIT_NO_SUBSCRIBER}   nobody is subscribed: pub/sub dropped the message
  {EXIT_USAGE}   bad command line
  {EXIT_BAD_PAYLOAD}  the payload is not a JSON object
  {EXIT_UNREACHABLE}  Redis is unreachable or refused the command""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pairs", nargs="*", metavar="key=value", help="a string field of the message")
    parser.add_argument("--data", metavar="JSON", help="the message as a JSON object; '-' reads stdin")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("ASYNCPHP_REDIS_URL", DEFAULT_REDIS_URL),
        help="default: $ASYNCPHP_REDIS_URL or %(default)s",
    )
    parser.add_argument(
        "--channel",
        default=os.environ.get("ASYNCPHP_CHANNEL", DEFAULT_CHANNEL),
        help="default: $ASYNCPHP_CHANNEL or %(default)s",
    )
    parser.add_argument("--stream", metavar="NAME", help="add to this stream (durable) instead of publishing")
    parser.add_argument(
        "--maxlen",
        type=int,
        default=DEFAULT_MAXLEN,
        help="with --stream: keep about this many entries (%(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        message = build_payload(args.data, args.pairs)
    except PayloadError as exc:
        print(f"asyncphp-publish: {exc}", file=sys.stderr)
        return EXIT_BAD_PAYLOAD
    try:
        if args.stream:
            print(
                publish(
                    message, channel=args.stream, redis_url=args.redis_url, durable=True, maxlen=args.maxlen
                )
            )
            return EXIT_DELIVERED
        receivers = publish(message, channel=args.channel, redis_url=args.redis_url)
    except (redis.RedisError, ValueError) as exc:
        # redis-py raises ValueError for a malformed URL.
        print(f"asyncphp-publish: cannot publish to {redact(args.redis_url)}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if receivers == 0:
        print(
            f"asyncphp-publish: nobody is subscribed to {args.channel!r}: the message was dropped",
            file=sys.stderr,
        )
        return EXIT_NO_SUBSCRIBER
    return EXIT_DELIVERED


if __name__ == "__main__":
    sys.exit(main())
