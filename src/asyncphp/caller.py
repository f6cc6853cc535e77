"""Publish a job for the asyncphp daemon: ``publish()`` for app code, ``python -m asyncphp.caller``.

This module needs only redis-py: app code that publishes never loads the daemon, flup or systemd.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import math
import os
import random
import re
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from asyncphp import redisurl
from asyncphp.redisurl import Client, redact
from asyncphp.wire import meta, scripts
from asyncphp.wire.body import BadMessage, Limits, form_body, reject_json_constant
from asyncphp.wire.keys import Keys

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CHANNEL = "commands"
DEFAULT_MAXLEN = scripts.DEFAULT_MAXLEN
DEFAULT_UNIQUE_FOR = 3600.0  # seconds a unique job's guard holds at most
MAX_UNIQUE_FOR = 2.0**31  # seconds (68 years): Redis refuses an expiry past its clock's range
MAX_DELAY = 2.0**31  # seconds (68 years), as the PHP client: both refuse the same delays
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAEMON_LIMITS = Limits()  # the daemon's defaults: max_message_bytes, max_nesting, max_fields
CONNECT_TIMEOUT = 2.0  # seconds, as the original caller

EXIT_DELIVERED = 0
EXIT_NO_SUBSCRIBER = 1
EXIT_NOT_ADDED = 3  # a job with the same unique key holds its guard
EXIT_USAGE = 2  # argparse's own
EXIT_BAD_PAYLOAD = 65  # sysexits EX_DATAERR
EXIT_UNREACHABLE = 69  # sysexits EX_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What :func:`enqueue` did."""

    id: str  # the stream entry's id; "d<n>" for a job waiting until it is due
    added: bool  # False: a job with the same unique key holds its guard; ``id`` is that job's
    due_at: datetime | None  # when it was due, if delayed or scheduled (Redis's clock)


def enqueue(
    message: Mapping[str, Any],
    *,
    stream: str = DEFAULT_CHANNEL,
    redis_url: str = DEFAULT_REDIS_URL,
    maxlen: int = DEFAULT_MAXLEN,
    delay: float | None = None,
    at: datetime | None = None,
    unique_key: str | None = None,
    unique_for: float = DEFAULT_UNIQUE_FOR,
    unique_until: Literal["processed", "expiry"] = "processed",
    client: Client | None = None,
    limits: Limits = DAEMON_LIMITS,
    release: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> Enqueued:
    """Add ``message`` to the Redis stream a daemon reads (``--stream``): at once, or after
    ``delay`` seconds, or at ``at``; and, with ``unique_key``, only if no job with that key holds
    its guard.

    A delayed job waits in Redis (a sorted set beside the stream); the daemons move it into the
    stream when it is due. The worker sees its due time as ``$_SERVER['ASYNCPHP_DUE_AT']``
    (seconds since the epoch). A unique job's guard is set in the same atomic step as the add,
    and holds for ``unique_for`` seconds, or (``unique_until="processed"``, the default) until
    the job is acknowledged or dead-lettered, whichever comes first.

    Args:
        message: a JSON-serialisable mapping; the worker receives it as ``$_POST``.
        stream: the stream the daemon reads.
        redis_url: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
            ``redis+cluster://`` URL.
        maxlen: the stream is trimmed to about this many entries.
        delay: seconds from now (by Redis's clock) before the job may run.
        at: an aware datetime before which the job may not run; in the past, it runs now.
        unique_key: no second job with this key is added while the first holds the guard.
        unique_for: seconds the guard holds at most.
        unique_until: ``"processed"`` releases the guard when the job is settled,
            ``"expiry"`` only when ``unique_for`` has run out.
        client: a redis-py client to use instead of connecting to ``redis_url``.
        limits: the daemon's max_message_bytes, max_nesting and max_fields, if not the defaults.
        release: the release publishing it (default: ``$ASYNCPHP_RELEASE``), so that a daemon
            whose worker_script names ``{release}`` runs it with that release's code.
        traceparent, tracestate: the W3C trace context the job continues (default: the current
            OpenTelemetry context, when opentelemetry-api is installed).

    Raises:
        TypeError, ValueError: ``message`` cannot be serialised to a JSON object, the daemon
            would skip it (too large, deep or wide), or a time is invalid (``delay`` negative,
            ``at`` naive, ``unique_for`` not positive).
        redis.RedisError: Redis is unreachable or refused the command.
    """
    payload = _json(_with_meta(message, release, traceparent, tracestate), limits)
    delay_ms, at_ms = -1, -1
    if delay is not None and at is not None:
        raise ValueError("give delay or at, not both")
    if delay is not None:
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"delay must be from 0 to {MAX_DELAY:.0f} seconds, not {delay!r}")
        delay_ms = _milliseconds(delay)
    if at is not None:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"at must be an aware datetime (with a time zone), not {at.isoformat()}")
        # In whole microseconds, then ms half up: the PHP client's arithmetic, for the same bytes.
        at_ms = max(0, ((at - EPOCH) // timedelta(microseconds=1) + 500) // 1000)
    if unique_key is not None and (not unique_key or not 0.001 <= unique_for <= MAX_UNIQUE_FOR):
        raise ValueError(
            f"unique_key must be non-empty and unique_for from 0.001 to {MAX_UNIQUE_FOR:.0f} seconds"
        )
    if unique_until not in ("processed", "expiry"):
        raise ValueError(f"unique_until must be 'processed' or 'expiry', not {unique_until!r}")
    if client is None:
        _check_stream(redis_url, stream)
    keys = Keys(stream)
    with _connected(redis_url, client) as redis_client:
        if delay is None and at is None and unique_key is None:
            return Enqueued(_xadd(redis_client, stream, payload, maxlen), True, None)
        reply = redis_client.register_script(scripts.ADD)(
            keys=list(keys.adding(unique_key or "")),
            args=[
                payload,
                maxlen,
                delay_ms,
                at_ms,
                unique_key or "",
                _milliseconds(unique_for),
                unique_until,
            ],
        )
    done = scripts.added(reply)
    due = datetime.fromtimestamp(done.due_ms / 1000, UTC) if done.due_ms >= 0 else None
    return Enqueued(done.id, done.added, due)


def publish(
    message: Mapping[str, Any],
    *,
    channel: str = DEFAULT_CHANNEL,
    redis_url: str = DEFAULT_REDIS_URL,
    limits: Limits = DAEMON_LIMITS,
    client: Client | None = None,
    release: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> int:
    """Publish ``message`` as JSON on a Redis channel, for the daemons subscribed to hand to the pool.

    Pub/sub does not store messages: when this returns 0, nobody was subscribed and the job is
    gone. For a job that waits in Redis until a daemon runs it (durable, delayed, scheduled,
    unique), see :func:`enqueue`.

    Args:
        message: a JSON-serialisable mapping; the worker receives it as ``$_POST``.
        channel: the Redis channel the daemon subscribes to.
        redis_url: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
            ``redis+cluster://`` URL.
        limits: the daemon's max_message_bytes, max_nesting and max_fields, if not the defaults.
        client: a redis-py client (``asyncphp.redisurl.client(url)``) to use instead of connecting
            to ``redis_url`` for this one message: kept, it saves a connection per message, and
            on a cluster the slot map asked each time.
        release: the release publishing it (default: ``$ASYNCPHP_RELEASE``), so that a daemon
            whose worker_script names ``{release}`` runs it with that release's code.
        traceparent, tracestate: the W3C trace context the job continues (default: the current
            OpenTelemetry context, when opentelemetry-api is installed).

    Returns:
        The number of subscribers that received the message. On a cluster with ``pubsub=classic``,
        those at the channel's primary: 0 for a moment after a failover, although the message is
        broadcast to the daemons.

    Raises:
        TypeError, ValueError: ``message`` cannot be serialised to a JSON object, or the daemon
            would skip it (too large, deep or wide).
        redis.RedisError: Redis is unreachable or refused the command.
    """
    payload = _json(_with_meta(message, release, traceparent, tracestate), limits)
    with _connected(redis_url, client) as redis_client:
        if isinstance(redis_client, RedisCluster):
            # The URL says which pub/sub the daemons read, also beside a client of one's own.
            if redisurl.is_cluster(redis_url) and redisurl.cluster(redis_url).pubsub == "classic":
                # Broadcast from the channel's primary, where the daemons subscribe: its count of
                # subscribers is that node's own.
                node = redis_client.get_node_from_key(channel)
                count = int(redis_client.execute_command("PUBLISH", channel, payload, target_nodes=node))
                if count == 0:
                    # A PUBLISH is never redirected: a kept client would go on asking a demoted
                    # primary. The next one goes where the cluster says then.
                    redis_client.nodes_manager.initialize()
                return count
            return int(redis_client.spublish(channel, payload))  # to the shard of the channel's slot
        return int(redis_client.publish(channel, payload))


def partition(stream: str, partitions: int, key: str | None = None) -> str:
    """The partition of ``stream`` a job goes to, ``stream{i}`` for i in 0 … ``partitions`` - 1:
    by ``key`` (CRC-32, as PHP's crc32(): jobs with one key go to one partition, in order), or at
    random. On a cluster, the partitions' hash tags spread them over the shards; the daemons read
    every one (``streams = ["commands{0}", …]``).

    Raises:
        ValueError: ``partitions`` is below 1, or ``stream`` has a hash tag of its own (which
            would keep every partition on its slot).
    """
    if partitions < 1:
        raise ValueError(f"partitions must be 1 or more, not {partitions}")
    if redisurl.hash_tag(stream):
        raise ValueError(f"{stream!r} has a hash tag: its partitions {stream}{{0}}… would all share its slot")
    index = zlib.crc32(key.encode()) % partitions if key is not None else random.randrange(partitions)
    return f"{stream}{{{index}}}"


def _check_stream(redis_url: str, stream: str) -> None:
    """On a cluster, a stream without a hash tag is one no daemon reads (asyncphp.settings refuses it)."""
    if redisurl.is_cluster(redis_url):
        redisurl.require_tag(stream)


@contextlib.contextmanager
def _connected(redis_url: str, client: Client | None = None) -> Iterator[Client]:
    """``client`` as given (the caller's to close), or a connection to ``redis_url``, closed after."""
    if client is not None:
        yield client
        return
    own = redisurl.client(redis_url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
    try:
        yield own
    except RedisClusterException as exc:  # a RedisError, as documented, whatever the client
        raise redis.RedisError(str(exc)) from exc
    finally:
        own.close()


def _xadd(client: Client, stream: str, payload: str, maxlen: int) -> str:
    """The durable add of the wire contract: XADD <stream> MAXLEN ~ <maxlen> * payload <payload>."""
    entry_id: Any = client.xadd(stream, {"payload": payload}, maxlen=maxlen, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def _with_meta(
    message: Mapping[str, Any], release: str | None, traceparent: str | None, tracestate: str | None
) -> Mapping[str, Any]:
    """The message with what the daemon should know besides (``asyncphp.wire.meta``), if anything."""
    if meta.KEY in message:
        raise ValueError(f"the key {meta.KEY!r} is the daemon's own: a payload cannot hold it")
    release = os.environ.get("ASYNCPHP_RELEASE", "") if release is None else release
    if release and not meta.RELEASE.fullmatch(release):
        raise ValueError(
            f"release {release!r} is not a release id: letters, digits, '.', '_', '-'; 64 at most"
        )
    if traceparent is None:
        traceparent, tracestate = _current_trace()
    elif traceparent and not meta.valid_traceparent(traceparent):
        raise ValueError(
            f"traceparent {traceparent!r} is not W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>"
        )
    # A tracestate means nothing without its traceparent (the daemon drops it; so does the PHP client).
    fields = {
        "release": release,
        "traceparent": traceparent,
        "tracestate": (tracestate or "") if traceparent else "",
    }
    said = {name: value for name, value in fields.items() if value}
    return {**message, meta.KEY: said} if said else message


def _current_trace() -> tuple[str, str]:
    """The current OpenTelemetry context as W3C headers; none without opentelemetry-api."""
    propagate = _propagate()
    if propagate is None:
        return "", ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")


@functools.cache
def _propagate() -> Any:
    """opentelemetry.propagate, if installed (the otel extra): looked for once."""
    try:
        return importlib.import_module("opentelemetry.propagate")
    except ImportError:
        return None


def _json(message: Mapping[str, Any], limits: Limits) -> str:
    """The message as the daemon reads it, checked as the daemon checks it (the same JSON, byte
    for byte, as the PHP client's for the same data)."""
    payload = json.dumps(dict(message), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        form_body(payload.encode(), limits)
    except BadMessage as exc:
        raise PayloadError(f"the daemon would skip this message: {exc}") from None
    return payload


def _milliseconds(seconds: float) -> int:
    """Seconds → whole ms, half up (not round()'s half to even): as the PHP client does."""
    return math.floor(seconds * 1000 + 0.5)


def php_date_c(now: datetime | None = None) -> str:
    """The local time as PHP's ``date('c')`` prints it: ``2026-11-27T14:01:18+00:00``."""
    return (now or datetime.now().astimezone()).isoformat(timespec="seconds")


class PayloadError(ValueError):
    """The payload is not a JSON object, or not one the daemon would run (too large, deep or wide)."""


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


DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|min|h|d)?$")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """``30``, ``30s``, ``250ms``, ``5m``, ``2h``, ``1d`` → seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 250ms, 5m, 2h")
    return float(match[1]) * UNITS[match[2] or "s"]


def moment(text: str) -> datetime:
    """An ISO 8601 time with its offset: ``2026-12-01T10:00:00+01:00``."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add one, e.g. +01:00 or Z")
    return when


def define(parser: argparse.ArgumentParser) -> None:
    """The command line of `asyncphp publish` (and asyncphp-publish), declared on ``parser``."""
    from asyncphp import settings  # only the command line reads them

    parser.description = (
        "Publish one job for the asyncphp daemon. With no payload, publishes "
        '{"timestamp": "<now, ISO 8601>"} like the original caller. Where to publish comes from the '
        "daemon's settings (--config: its redis_url, redis_password_file, first channel and message "
        "limits), so that publish and the daemon talk to one Redis, unless given here."
    )
    parser.epilog = f"""With --stream the message is added to that Redis stream (durable mode) and its entry
id is printed; it waits there for a daemon started with --stream. --delay, --at and --unique
imply the durable mode (the stream is --stream, else --channel's name):

  asyncphp publish --stream mail --delay 30s to=ann@example.com
  asyncphp publish --stream reports --at 2026-12-01T10:00:00+01:00 report=daily
  asyncphp publish --stream mail --unique welcome:42 --unique-for 10m user=42

A delayed job's id is d<n> (see asyncphp delayed); a unique job already held prints the
holder's id, says so on stderr, and exits {EXIT_NOT_ADDED}.

exit status:
  {EXIT_DELIVERED}   delivered to at least one subscriber (or added to the stream)
  {EXIT_NO_SUBSCRIBER}   nobody is subscribed: pub/sub dropped the message
  {EXIT_USAGE}   bad command line
  {EXIT_NOT_ADDED}   not added: a job with the same unique key holds its guard
  {EXIT_BAD_PAYLOAD}  the payload is not a JSON object, or one the daemon would skip (too large, deep or wide)
  {EXIT_UNREACHABLE}  Redis is unreachable or refused the command"""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("pairs", nargs="*", metavar="key=value", help="a string field of the message")
    parser.add_argument("--data", metavar="JSON", help="the message as a JSON object; '-' reads stdin")
    # The daemon's own flags, so that --redis-url is read as the daemon reads it; --channel and
    # --stream are not its settings here but where this one job goes.
    settings.add_arguments(parser, ("redis_url",))
    parser.add_argument(
        "--channel",
        help=f"default: $ASYNCPHP_CHANNEL, else the daemon's first channel, else {DEFAULT_CHANNEL}",
    )
    parser.add_argument("--stream", metavar="NAME", help="add to this stream (durable) instead of publishing")
    parser.add_argument(
        "--maxlen",
        type=int,
        default=DEFAULT_MAXLEN,
        help="with --stream: keep about this many entries (%(default)s)",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--delay", type=duration, metavar="DURATION", help="run no sooner than this from now")
    when.add_argument("--at", type=moment, metavar="TIME", help="run no sooner than this ISO 8601 time")
    parser.add_argument("--unique", metavar="KEY", help="add only if no job with this key holds its guard")
    parser.add_argument(
        "--unique-for",
        type=duration,
        default=DEFAULT_UNIQUE_FOR,
        metavar="DURATION",
        help="the longest the guard holds (default: 1h)",
    )
    parser.add_argument(
        "--unique-until",
        choices=("processed", "expiry"),
        default="processed",
        help="release the guard when the job is settled (default), or only at --unique-for's end",
    )
    parser.add_argument(
        "--release", help="the release publishing it, for a daemon that runs each job with its release's "
        "code (default: $ASYNCPHP_RELEASE)",
    )  # fmt: skip
    parser.add_argument(
        "--partitions", type=int, metavar="N",
        help="add to one of N partitions of the stream (--stream, else --channel's name: the durable "
        "mode), NAME{0} … NAME{N-1}: by --partition-key, else at random",
    )  # fmt: skip
    parser.add_argument(
        "--partition-key", metavar="KEY", help="with --partitions: jobs with one key go to one partition"
    )
    parser.add_argument("--traceparent", help="the W3C trace context the job continues (00-…)")
    parser.add_argument("--tracestate", help="its W3C tracestate")


@dataclass(frozen=True, slots=True)
class _Target:
    """Where the command line publishes: the daemon's Redis, channel and limits unless it says."""

    redis_url: str
    password_file: str
    channel: str
    limits: Limits


def _target(args: argparse.Namespace, env: Mapping[str, str]) -> _Target:
    """Where to publish. The daemon's settings give what the command line does not say; when it
    says where (Redis, and a channel or stream) and no --config is given, settings that cannot be
    read (a file for root alone, a setting this command does not use) cost only their limits.

    Raises:
        SettingsError: the daemon's settings are needed and invalid.
    """
    from asyncphp.settings import SettingsError, from_arguments  # only the command line reads them

    try:
        # The file and env alone: the command line's Redis and channel win after, with their
        # fallback below when the file cannot be read.
        daemon = from_arguments(argparse.Namespace(config=args.config), env)
    except SettingsError:
        if args.config or not args.redis_url or not (args.channel or args.stream):
            raise
        return _Target(args.redis_url, "", args.channel or DEFAULT_CHANNEL, DAEMON_LIMITS)
    if args.stream is None and args.channel is None and not daemon.channels and daemon.streams:
        args.stream = daemon.streams[0]  # a daemon of streams alone: where it reads
    return _Target(
        args.redis_url or daemon.redis_url,
        "" if args.redis_url else daemon.redis_password_file,
        args.channel or (daemon.channels or (DEFAULT_CHANNEL,))[0],
        Limits(daemon.max_message_bytes, daemon.max_nesting, daemon.max_fields),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``asyncphp-publish``: `asyncphp publish`'s command line, as a command of its own."""
    cli = argparse.ArgumentParser(prog="asyncphp-publish")
    define(cli)
    try:
        return run(cli.parse_args(argv))
    except argparse.ArgumentError as exc:
        cli.error(str(exc))


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Publish as `define`'s command line asks; the exit status.

    Raises:
        argparse.ArgumentError: a bad command line that argparse alone cannot tell (the caller's
            parser says so and exits 2).
    """
    from asyncphp.settings import SettingsError

    env = os.environ if env is None else env
    if args.channel is None:
        # Read here rather than as the parser's default, so that the command tree, and the manual
        # made from it, are the same whatever the environment.
        args.channel = env.get("ASYNCPHP_CHANNEL")
    if args.partition_key is not None and args.partitions is None:
        raise argparse.ArgumentError(None, "--partition-key chooses one of --partitions N: give both")
    if args.redis_url is not None:
        try:
            redisurl.validate(args.redis_url)
        except ValueError as exc:
            raise argparse.ArgumentError(None, f"--redis-url {redact(args.redis_url)}: {exc}") from None
    try:
        target = _target(args, env)
    except SettingsError as exc:
        print(f"asyncphp-publish: the daemon's settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args.channel = target.channel
    try:
        message = build_payload(args.data, args.pairs)
    except PayloadError as exc:
        print(f"asyncphp-publish: {exc}", file=sys.stderr)
        return EXIT_BAD_PAYLOAD
    try:
        if args.partitions is not None:
            args.stream = partition(args.stream or args.channel, args.partitions, args.partition_key)
        if args.stream or _scheduled(args):
            _check_stream(target.redis_url, args.stream or args.channel)
        with contextlib.closing(
            redisurl.client(target.redis_url, target.password_file, socket_connect_timeout=CONNECT_TIMEOUT,
                            socket_timeout=CONNECT_TIMEOUT)
        ) as client:  # fmt: skip
            return _published(args, message, client, target)
    except (*redisurl.FAILURES, OSError) as exc:  # OSError: the password file cannot be read
        print(f"asyncphp-publish: cannot publish to {redact(target.redis_url)}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PayloadError as exc:
        print(f"asyncphp-publish: {exc}", file=sys.stderr)
        return EXIT_BAD_PAYLOAD
    except ValueError as exc:  # what was asked cannot be published (a release id, a trace, a partition)
        print(f"asyncphp-publish: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _scheduled(args: argparse.Namespace) -> bool:
    """Delayed, scheduled or unique: through the add script, in the durable mode."""
    return args.delay is not None or args.at is not None or args.unique is not None


def _published(args: argparse.Namespace, message: Mapping[str, Any], client: Client, target: _Target) -> int:
    """Publish as the command line asks; the exit status."""
    common: dict[str, Any] = {
        "client": client, "redis_url": target.redis_url, "limits": target.limits, "release": args.release,
        "traceparent": args.traceparent, "tracestate": args.tracestate,
    }  # fmt: skip
    if _scheduled(args):
        done = enqueue(
            message, stream=args.stream or args.channel, maxlen=args.maxlen, delay=args.delay, at=args.at,
            unique_key=args.unique, unique_for=args.unique_for, unique_until=args.unique_until, **common,
        )  # fmt: skip
        print(done.id)
        if not done.added:
            print(
                f"asyncphp-publish: not added: job {done.id} holds the unique key {args.unique!r}",
                file=sys.stderr,
            )
            return EXIT_NOT_ADDED
        return EXIT_DELIVERED
    if args.stream:
        print(enqueue(message, stream=args.stream, maxlen=args.maxlen, **common).id)
        return EXIT_DELIVERED
    receivers = publish(message, channel=target.channel, **common)
    if receivers == 0:
        print(
            f"asyncphp-publish: nobody is subscribed to {target.channel!r}: the message was dropped",
            file=sys.stderr,
        )
        return EXIT_NO_SUBSCRIBER
    return EXIT_DELIVERED


if __name__ == "__main__":
    sys.exit(main())
