"""The cluster scenarios, on a six-node loopback Redis Cluster (three primaries and a replica each,
made by sandbox.start_cluster): durable throughput from one slot beside four partitions over the
three primaries, a daemon resuming after the primary of its stream is killed under a steady
publish, and the healthy shards' jobs while another primary hangs (SIGSTOP). Each run starts its
own cluster and pools in a temp dir and returns figures; counts are exact, times come from the
worker's log (and the daemon's, for its reconnect)."""

from __future__ import annotations

import json
import math
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from asyncphp import redisurl
from asyncphp.caller import partition
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Cluster, Pool, Server
from benchmarks import drivers
from benchmarks.scenarios import LOG_LEVELS, POOL_CONF, percentiles
from benchmarks.scheduling import WORKER as SCHED_WORKER

NODE_TIMEOUT_MS = 2000  # cluster-node-timeout: a primary is failed over this long after it stops answering
SINGLE = "{one}"  # one hash tag: one slot, one primary
PARTITIONS = 4  # commands{0} … commands{3}: their tags land on all three primaries
RESUME = "{resume}"


@dataclass(frozen=True)
class Sizes:
    backlog: int = 20_000  # jobs in each throughput case's backlog
    rate: float = 200.0  # jobs added per second while a primary is killed
    publish_s: float = 10.0  # how long they are added: the failover (node timeout 2 s) well inside
    ran_before_kill: int = 200  # jobs started before the primary is killed


FULL = Sizes()
QUICK = Sizes(backlog=1_000, publish_s=8.0, ran_before_kill=100)

# How long a bounded wait here may last, beyond what the sizes take: a stuck run fails, not hangs.
SLACK_S = 60.0


@contextmanager
def private_cluster() -> Iterator[tuple[Path, Cluster]]:
    """A cluster in a new temp dir; every node this started is stopped, and the dir removed, on exit."""
    with tempfile.TemporaryDirectory(prefix="asyncphp-bench-cluster-") as tmp:
        workdir = Path(tmp)
        cluster = sandbox.start_cluster(workdir / "cluster", node_timeout_ms=NODE_TIMEOUT_MS)
        try:
            yield workdir, cluster
        finally:
            cluster.stop()


def add_backlog(cluster: Cluster, jobs: dict[str, list[int]]) -> None:
    """Each stream's jobs (numbered n, as drivers.publish_burst numbers them) added at its own
    primary in pipelines of 1,000: a cluster pipeline would split them by node anyway."""
    for stream, numbers in jobs.items():
        client = redis.Redis(host="127.0.0.1", port=cluster.owner(stream))
        pipe = client.pipeline(transaction=False)
        for i, n in enumerate(numbers):
            pipe.xadd(stream, {"payload": json.dumps({"n": n})})
            if i % 1_000 == 999:
                pipe.execute()
        pipe.execute()
        client.close()


def _alive(daemons: Sequence[Server]) -> None:
    for daemon in daemons:
        if daemon.process.poll() is not None:
            tail = daemon.log.read_text(errors="replace")[-2000:] if daemon.log.exists() else ""
            raise RuntimeError(f"a daemon exited with {daemon.process.returncode}:\n{tail}")


def _cpu(servers: Sequence[Server]) -> float:
    """CPU seconds of ``servers`` together."""
    return sum(drivers.cpu_seconds(server.pid) for server in servers)


@contextmanager
def daemons(cluster: Cluster, pools: Sequence[Pool], worker: Path, *extra: str) -> Iterator[list[Server]]:
    """One daemon per pool (consumers bench-1, bench-2 …), shipped settings (INFO, a line per
    job, to a file), with ``extra`` flags; all stopped on exit, before the cluster is."""
    started: list[Server] = []
    try:
        for i, pool in enumerate(pools, 1):
            started.append(
                sandbox.start_daemon(
                    cluster.url, pool.listen, worker, "--log-level", LOG_LEVELS["shipped"],
                    "--consumer", f"bench-{i}", *extra, log=pool.worker_log.parent / "daemon.log",
                )
            )  # fmt: skip
        yield started
    finally:
        for daemon in reversed(started):
            daemon.stop()


def _drain(
    cluster: Cluster, workdir: Path, streams: Sequence[str], count: int, readers: int
) -> dict[str, float]:
    """``count`` jobs spread over ``streams`` by caller.partition's key (or all in the one stream),
    added before ``readers`` daemons start, each with its own shipped pool; jobs per second from
    the first job's start (the worker's clock) to when the last one's line was there, as the
    durable burst measures its end; and how many ran, and how many more than once."""
    jobs: dict[str, list[int]] = {stream: [] for stream in streams}
    base = streams[0].partition("{")[0]
    for n in range(count):
        stream = partition(base, len(streams), key=f"job-{n}") if len(streams) > 1 else streams[0]
        jobs[stream].append(n)
    add_backlog(cluster, jobs)
    flags = [flag for stream in streams for flag in ("--stream", stream)]
    with ExitStack() as stack:
        pools: list[Pool] = []
        for i in range(readers):  # a pool each, as on two hosts; new ones, so every case forks its children
            pools.append(sandbox.start_pool(workdir / f"pool-{i}", POOL_CONF))
            stack.callback(pools[-1].stop)
        lines = [drivers.LineCounter(pool.worker_log) for pool in pools]
        running = stack.enter_context(daemons(cluster, pools, drivers.WORKER, *flags))
        deadline = time.monotonic() + count / 100 + SLACK_S
        # From the first line seen: the daemons' start-up left out.
        cpu_from = redis_from = wall_from = float("nan")
        while sum(counter.update() for counter in lines) < count:
            _alive(running)
            if math.isnan(wall_from) and any(counter.count for counter in lines):
                cpu_from, redis_from = _cpu(running), _cpu(cluster.nodes)
                wall_from = time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(c.count for c in lines)} of {count} jobs ran")
            time.sleep(0.001)
        ended, wall = time.time(), time.monotonic() - wall_from
        busy, redis_busy = (_cpu(running) - cpu_from) / wall, (_cpu(cluster.nodes) - redis_from) / wall
        time.sleep(1.0)  # a job run twice would most likely start within this
        _alive(running)
    runs = Counter[int]()
    first = float("inf")
    for pool in pools:
        for line in pool.worker_log.read_text().splitlines():
            number, _, started = line.split()
            runs[int(number)] += 1
            first = min(first, float(started))
    return {
        "rate": count / (ended - first),
        "ran": sum(1 for n in runs if 0 <= n < count),
        "twice": sum(1 for times in runs.values() if times > 1),
        "primaries": len({cluster.owner(stream) for stream in streams}),
        # The daemons' CPU while the jobs ran, in cores (near 1: one daemon is the bottleneck), and
        # the six nodes' (each write is replicated: the replicas work too).
        "daemon_cores": busy,
        "redis_cores": redis_busy,
    }


def throughput(sizes: Sizes) -> dict[str, float]:
    """The same backlog three ways on one cluster, one after the other: in the one stream {one}
    with one daemon; over the four partitions commands{0…3} with one daemon (a source per slot,
    each reading from its primary); and over four more, jobs{0…3}, with two daemons."""
    count = sizes.backlog
    with private_cluster() as (workdir, cluster):
        cases = {
            "single": _drain(cluster, workdir / "single", [SINGLE], count, 1),
            "partitions": _drain(
                cluster, workdir / "partitions", [f"commands{{{i}}}" for i in range(PARTITIONS)], count, 1
            ),
            # New streams (the same slots): a new backlog read from its start by the group.
            "two_daemons": _drain(
                cluster, workdir / "two", [f"jobs{{{i}}}" for i in range(PARTITIONS)], count, 2
            ),
        }
    figures = {f"{case}_{key}": value for case, found in cases.items() for key, value in found.items()}
    figures["jobs"] = count
    figures["ratio"] = figures["partitions_rate"] / figures["single_rate"]
    figures["ratio_two_daemons"] = figures["two_daemons_rate"] / figures["single_rate"]
    return figures


def _serves(port: int, slot: int) -> bool:
    """Whether the node on ``port`` says that it is a primary and that ``slot`` is its own."""
    try:
        me = next(node for node in sandbox.cluster_nodes(port, timeout=1) if node.myself)
    except redis.RedisError:
        return False
    return me.primary and me.serves(slot)


@dataclass
class Publisher:
    """Adds jobs n = 0… to a stream at a steady rate through a cluster client, retrying each add
    until the cluster takes it (a failover makes adds fail for a while); notes when each was
    accepted. Bounded: ``count`` jobs, and no add retried past ``give_up`` (monotonic)."""

    url: str
    stream: str
    rate: float
    count: int
    give_up: float
    # n, time.time() of the reply, and the entry id's time (when Redis added it, by its clock).
    accepted: list[tuple[int, float, int]] = field(default_factory=list)
    refusals: int = 0
    failure: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set when the scenario fails

    def run(self) -> None:
        client = redisurl.cluster_client(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            due = time.monotonic()
            for n in range(self.count):
                # After an outage, on at the rate again rather than a burst to catch up.
                due = max(due + 1 / self.rate, time.monotonic())
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
                while True:
                    try:
                        entry = client.xadd(self.stream, {"payload": json.dumps({"n": n, "ms": 0})})
                        break
                    # A primary down: refused, or a slot map that does not cover the slot.
                    except redisurl.FAILURES:
                        self.refusals += 1
                        if time.monotonic() > self.give_up:
                            raise
                        if self.stop.wait(0.05):
                            return
                entry_ms = int((entry.decode() if isinstance(entry, bytes) else str(entry)).partition("-")[0])
                self.accepted.append((n, time.time(), entry_ms))
        except BaseException as exc:  # reported by the scenario: a thread cannot raise into it
            self.failure = exc
        finally:
            client.close()


@dataclass(frozen=True, slots=True)
class Began:
    n: int
    entry_ms: int  # the entry's id's time: when Redis added it, by Redis's clock (this machine's)
    entry: str
    at: float
    stream: str


def began(path: Path) -> list[Began]:
    """The start lines of tests/php/sched.php in ``path`` (a torn last line left out)."""
    found: list[Began] = []
    try:
        text = path.read_text()
    except FileNotFoundError:  # no job ran yet
        return found
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if line.endswith("\n") and len(fields) == 7 and fields[0] == "start":
            entry_ms = int(fields[3].partition("-")[0])
            found.append(Began(int(fields[2]), entry_ms, fields[3], float(fields[5]), fields[1]))
    return found


def _connected_at(log: Path, port: int, stream: str, after: float) -> float:
    """When the daemon logged that it connected for ``stream`` to the node on ``port``, after
    ``after`` (time.time()); nan if it did not. The stamp is the daemon's, to the millisecond."""
    marker = f"Connected to redis on 127.0.0.1:{port} "
    for line in log.read_text(errors="replace").splitlines():
        if marker not in line or f" for stream {stream} " not in line:
            continue
        stamp, _, millis = line[:23].partition(",")
        at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        if at >= after:
            return at
    return float("nan")


def resume(sizes: Sizes) -> dict[str, float]:
    """A daemon reads {resume} while jobs are added to it at ``rate``/s; once some ran, the
    primary that owns the stream is killed (SIGKILL). Seconds from the kill until its replica says
    it serves the slot (the cluster's failover); until the daemon logged its connection to it;
    until the first job added after the kill (its entry id's time) started in the worker. Then,
    once the publisher is done, whether every job the cluster accepted ran, and how many twice."""
    stream, slot = RESUME, redisurl.slot(RESUME)
    with private_cluster() as (workdir, cluster), ExitStack() as stack:
        pool = sandbox.start_pool(workdir / "pool", POOL_CONF)
        stack.callback(pool.stop)
        primary = cluster.owner(stream)
        replica = cluster.replica_of(primary)  # in sync: start_cluster waits for it
        (daemon,) = stack.enter_context(daemons(cluster, [pool], SCHED_WORKER, "--stream", stream))

        def reading() -> bool:
            _alive([daemon])
            client = redis.Redis(host="127.0.0.1", port=primary)
            try:
                return any(c.get("cmd") == "xreadgroup" for c in client.client_list())
            finally:
                client.close()

        sandbox.wait_until(reading, sandbox.STARTUP_TIMEOUT, "the daemon on {resume}", daemon.log)
        count = round(sizes.rate * sizes.publish_s)
        publisher = Publisher(
            cluster.url, stream, sizes.rate, count, time.monotonic() + sizes.publish_s + SLACK_S
        )
        thread = threading.Thread(target=publisher.run, name="publisher")
        thread.start()
        try:
            deadline = time.monotonic() + SLACK_S
            while len(began(pool.worker_log)) < sizes.ran_before_kill:
                _alive([daemon])
                if publisher.failure or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{len(began(pool.worker_log))} jobs ran before the kill: {publisher.failure}"
                    )
                time.sleep(0.01)
            killed_at = time.time()
            cluster.node(primary).process.kill()
            cluster.node(primary).process.wait(10)
            # Gone by now: an entry whose id's time is later was added by another node. (Between
            # killed_at and the kill landing, the old primary may still add one, and answer.)
            dead_ms = time.time() * 1000
            deadline = time.monotonic() + SLACK_S
            while not _serves(replica, slot):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the replica on {replica} did not take slot {slot} over")
                time.sleep(0.01)
            failed_over_at = time.time()
        except BaseException:
            publisher.stop.set()
            raise
        finally:
            thread.join(sizes.publish_s + SLACK_S)
        if publisher.failure or thread.is_alive():
            raise RuntimeError(f"the publisher failed: {publisher.failure or 'still adding'}")
        accepted = {n for n, _, _ in publisher.accepted}
        deadline = time.monotonic() + SLACK_S
        while not accepted <= {b.n for b in began(pool.worker_log)} and time.monotonic() < deadline:
            _alive([daemon])
            time.sleep(0.05)
        time.sleep(1.0)  # a job run twice would most likely start within this
        _alive([daemon])
        starts = began(pool.worker_log)
        client = redis.Redis(host="127.0.0.1", port=replica)
        entries_left: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream)  # type: ignore[assignment]
        kept = Counter(int(json.loads(fields[b"payload"])["n"]) for _, fields in entries_left)
        pending = int(client.xpending(stream, "asyncphp")["pending"])
        client.close()
        connected_at = _connected_at(daemon.log, replica, stream, killed_at)
    ran = {b.n for b in starts}
    lost = accepted - ran
    entries = Counter(b.entry for b in starts)
    after_kill = [b.at for b in starts if b.entry_ms > dead_ms]
    return {
        "rate": sizes.rate,
        "ran_before_kill": sizes.ran_before_kill,
        "failover_s": failed_over_at - killed_at,
        "reconnect_s": connected_at - killed_at,
        "resume_s": (min(after_kill) if after_kill else float("nan")) - killed_at,
        # When the publisher's own cluster client got its first add through after the kill.
        "publisher_back_s": min(
            (at for _, at, entry_ms in publisher.accepted if entry_ms > dead_ms), default=float("nan")
        )
        - killed_at,
        "accepted": len(accepted),
        "refusals": publisher.refusals,
        "lost": len(lost),
        # Of those, the ones not in the stream on the new primary: acknowledged by the old one and
        # not yet replicated when it was killed (replication is asynchronous), not the daemon's.
        "lost_by_redis": len(lost - kept.keys()),
        "ran_twice": sum(1 for times in entries.values() if times > 1),  # one entry delivered twice
        # A job in the stream twice: an add retried after its reply was lost had been applied.
        "added_twice": sum(1 for times in kept.values() if times > 1),
        "pending": pending,
    }


def _on_distinct_primaries(cluster: Cluster, count: int) -> list[str]:
    """``count`` stream names, {h0}, {h1} …, each owned by a different primary."""
    names: dict[int, str] = {}
    for i in range(1_000):
        names.setdefault(cluster.owner(f"{{h{i}}}"), f"{{h{i}}}")
        if len(names) == count:
            return list(names.values())
    raise RuntimeError(f"no {count} hash tags on distinct primaries")


def hung(sizes: Sizes) -> dict[str, float]:
    """One daemon reads a stream on each of the three primaries (PINGs every second); jobs are
    added at ``rate``/s to the two whose primaries stay healthy. Once some ran, the third primary
    is SIGSTOPped: its connections stay open and silent, and every open the daemon tries against
    it waits for its timeouts. Milliseconds from an entry's add (its id's time) to the start of its
    job, for the healthy streams, before the stop and while the primary stays stopped (until the
    publishers end, past its failover). Issue 23, item 7: the opens ran on the loop, and the healthy
    shards' jobs waited behind them."""
    with private_cluster() as (workdir, cluster), ExitStack() as stack:
        hung_stream, *healthy = _on_distinct_primaries(cluster, 3)
        pool = sandbox.start_pool(workdir / "pool", POOL_CONF)
        stack.callback(pool.stop)
        flags = [flag for stream in (hung_stream, *healthy) for flag in ("--stream", stream)]
        (daemon,) = stack.enter_context(
            daemons(cluster, [pool], SCHED_WORKER, *flags, "--redis-health-interval", "1")
        )

        def reading() -> bool:
            _alive([daemon])
            return bool(daemon.log.read_text().count("Subscribed to stream") >= 3)

        sandbox.wait_until(reading, sandbox.STARTUP_TIMEOUT, "the daemon on its three streams", daemon.log)
        node = cluster.node(cluster.owner(hung_stream)).process
        count = round(sizes.rate / 2 * sizes.publish_s)
        give_up = time.monotonic() + sizes.publish_s + SLACK_S
        publishers = [Publisher(cluster.url, stream, sizes.rate / 2, count, give_up) for stream in healthy]
        threads = [threading.Thread(target=p.run, name=f"publisher {p.stream}") for p in publishers]
        for thread in threads:
            thread.start()
        stopped_ms = float("inf")
        try:
            deadline = time.monotonic() + SLACK_S
            while len(began(pool.worker_log)) < sizes.ran_before_kill:
                _alive([daemon])
                if any(p.failure for p in publishers) or time.monotonic() > deadline:
                    raise RuntimeError(f"{len(began(pool.worker_log))} jobs ran before the stop")
                time.sleep(0.01)
            stopped_ms = time.time() * 1000
            node.send_signal(signal.SIGSTOP)
            for thread in threads:
                thread.join(sizes.publish_s + SLACK_S)
        finally:
            for p in publishers:
                p.stop.set()
            node.send_signal(signal.SIGCONT)
            for thread in threads:
                thread.join(SLACK_S)
        failures = [p.failure for p in publishers if p.failure]
        if failures or any(t.is_alive() for t in threads):
            raise RuntimeError(f"a publisher failed: {failures or 'still adding'}")
        accepted = {(p.stream, n) for p in publishers for n, _, _ in p.accepted}
        deadline = time.monotonic() + SLACK_S
        while time.monotonic() < deadline:
            _alive([daemon])
            starts = [b for b in began(pool.worker_log) if (b.stream, b.n) in accepted]
            if len({(b.stream, b.n) for b in starts}) == len(accepted):
                break
            time.sleep(0.05)
    waits = {
        phase: [(b.at * 1000 - b.entry_ms) for b in starts if (b.entry_ms >= stopped_ms) == during]
        for phase, during in (("healthy", False), ("stopped", True))
    }
    figures: dict[str, float] = {
        "rate": sizes.rate,
        "accepted": len(accepted),
        "ran": len({(b.stream, b.n) for b in starts}),
        "refusals": sum(p.refusals for p in publishers),
    }
    for phase, samples in waits.items():
        for key, value in percentiles(samples).items():
            figures[f"{phase}_{key}"] = value
    return figures
