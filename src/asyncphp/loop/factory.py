"""The daemon's assembly: every part it runs, built once from the settings.

Which parts there are is decided here, once: a feature that is off is not built (no metrics
server, no tracer, no release routing, no delayed-job notices, no heartbeat), so the loop never
asks whether it is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from asyncphp.core.jobs import Counters, Message
from asyncphp.core.ledger import Policy
from asyncphp.loop.engine import Connection, Daemon, Hands, Parts, Pool
from asyncphp.loop.heartbeat import Heartbeat
from asyncphp.loop.keeper import Keeper, Source
from asyncphp.loop.logsink import Sink
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.overflow import Overflow
from asyncphp.loop.poller import Poller
from asyncphp.loop.pool import Dispatcher
from asyncphp.loop.pubsub import DueNotices, PubSubSource
from asyncphp.loop.releases import PLACEHOLDER, ReleaseRoutes, Routes
from asyncphp.loop.service import Notifier
from asyncphp.loop.story import Story
from asyncphp.loop.streams import StreamSource
from asyncphp.loop.tracing import OtelTracing, Tracing
from asyncphp.redisurl import Target, cluster, slot
from asyncphp.settings import Settings
from asyncphp.wire.keys import Keys, stream_of_notices


def daemon(
    settings: Settings,
    log: logging.Logger,
    sink: Sink,
    notifier: Notifier,
    reload: Callable[[], Settings] | None = None,
) -> Daemon:
    """The daemon the settings describe, ready to run.

    Raises:
        SpillError: state_dir cannot hold the spill file.
        TracingUnavailable: traces are on, without OpenTelemetry.
    """
    poller, counters, story = Poller(), Counters(), Story(log, sink)
    metrics = metrics_for(settings.metrics_listen)
    routes: Routes = Routes(settings.worker_script)
    if PLACEHOLDER in settings.worker_script:
        routes = ReleaseRoutes(
            settings.worker_script,
            settings.releases_root,
            settings.default_release,
            settings.release_wait,
            log,
            story,
        )

    def pool(hands: Hands) -> Pool:
        return Dispatcher(
            poller, settings.fpm_socket, hands.request, hands.ended, hands.keep, counters, metrics, log, story
        )

    def connections(hands: Hands) -> list[Connection]:
        sources = _sources(settings, hands, counters, metrics, log)
        readers = sum(isinstance(source, StreamSource) for source in sources)
        return [
            Keeper(
                source, settings.redis_url, poller, log, readers if isinstance(source, StreamSource) else 1
            )
            for source in sources
        ]

    tracing = OtelTracing(log) if settings.traces else Tracing()
    overflow = Overflow(settings.state_dir, settings.max_spill_bytes, counters, metrics, log)
    parts = Parts(poller, counters, metrics, tracing, overflow, routes, story, pool, connections)
    return Daemon(settings, log, sink, notifier, parts, reload=reload)


def metrics_for(listen: str) -> Metrics:
    """Metrics served on ``listen`` (host:port); "" means off, and prometheus_client is not imported."""
    if not listen:
        return Metrics()
    from asyncphp.loop.prometheus import PrometheusMetrics

    return PrometheusMetrics(listen)


def _sources(
    settings: Settings, hands: Hands, counters: Counters, metrics: Metrics, log: logging.Logger
) -> list[Source]:
    sources: list[Source] = []
    url = settings.redis_url
    target = Target(url, settings.redis_password_file)  # one slot map for all, on a cluster
    on_cluster = target.cluster
    if settings.channels:
        if on_cluster:
            # SSUBSCRIBE takes channels of one slot: a connection per slot, to its primary. And
            # SUBSCRIBE there too: a PUBLISH counts the receiving node's subscribers only, and
            # the caller publishes to the channel's primary (see asyncphp.caller.publish).
            sharded = cluster(url).pubsub == "sharded"
            sources += [
                PubSubSource(target, channels, hands.published, sharded=sharded)
                for channels in _by_slot(settings.channels)
            ]
        else:
            sources.append(PubSubSource(target, settings.channels, hands.published))
    if settings.streams:
        policy = Policy(settings.claim_idle, settings.max_attempts, settings.retry_delay, settings.max_queued)
        lanes = settings.lanes
        # On a cluster, one source per slot, read from the slot's primary: a read, a script, a
        # MULTI takes keys of one slot (a stream and its own keys share one; see settings).
        groups = _by_slot(lanes.streams) if on_cluster else [lanes.streams]
        streams = [
            StreamSource(
                target, group, group=settings.group, consumer=settings.consumer,
                policy=policy, deliver=hands.entry, resubmit=hands.resubmit, counters=counters,
                metrics=metrics, log=log, lanes=lanes.only(group), move_delayed=settings.move_delayed,
            )
            for group in groups
        ]  # fmt: skip
        sources += streams
        if settings.move_delayed:
            sources.append(_due_notices(target, streams, log))
    if settings.heartbeat_interval:
        sources.append(Heartbeat(target, settings.consumer, settings.heartbeat_interval, hands.snapshot))
    return sources


def _due_notices(target: Target, streams: list[StreamSource], log: logging.Logger) -> DueNotices:
    """Told when a job is added due before all others, each stream's source sleeps until then."""
    by_stream = {stream: source for source in streams for stream in source.streams}

    def heard(message: Message) -> None:
        source = by_stream.get(stream_of_notices(message.channel))
        if source is not None:
            source.heard(message)

    def notices_back() -> None:
        for source in streams:
            source.notices_back()

    channels = [Keys(stream).delayed for stream in by_stream]
    return DueNotices(target, channels, heard, notices_back, log)


def _by_slot(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``names`` grouped by cluster slot, in their order."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(slot(name), []).append(name)
    return [tuple(group) for group in groups.values()]
