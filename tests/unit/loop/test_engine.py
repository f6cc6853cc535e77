"""The loop itself, with its parts given and a fake clock: admission, the spill replay, release
routing's verdicts carried out, SIGHUP, the drain and the status line.

The pool here is the dispatcher's own decisions (``asyncphp.core.admission``) with requests that
go nowhere: a test answers them. Everything else is the daemon's real parts (spill files in a
temp dir, the poller, the release routes on a temp releases root); no socket, no server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asyncphp.core.admission import Admission, Limits
from asyncphp.core.jobs import Counters, Job, Message, Outcome, Result
from asyncphp.loop.engine import Connection, Daemon, Hands, Parts, Pool
from asyncphp.loop.logsink import Sink
from asyncphp.loop.metrics import Metrics
from asyncphp.loop.overflow import Overflow
from asyncphp.loop.releases import ReleaseRoutes, Routes
from asyncphp.loop.service import Notifier
from asyncphp.loop.story import Story
from asyncphp.loop.tracing import Tracing
from asyncphp.settings import Settings, load

WORKER = "/srv/app/worker.php"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Waits:
    """The loop's wait: the fake clock moves on by the timeout the loop asked for, and whatever a
    test scheduled for that turn happens (an answer from the pool, say)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.turns = 0
        self.then: dict[int, Callable[[], None]] = {}

    def watch(self, fd: int, events: int, callback: Callable[[int], None]) -> None:
        pass

    def poll(self, timeout: float) -> None:
        self.turns += 1
        assert self.turns < 1000, "the loop does not stop"
        happens = self.then.pop(self.turns, None)
        if happens is not None:
            happens()
        else:
            self.clock.now += timeout

    def close(self) -> None:
        pass


class FakePool:
    """Admission's decisions; a request started is held in :attr:`running` until answered."""

    def __init__(self, hands: Hands, clock: Clock) -> None:
        self.admission = Admission(Limits())
        self.hands = hands
        self.clock = clock
        self.running: list[tuple[Job, bytes]] = []

    in_flight = property(lambda self: self.admission.in_flight)
    queued = property(lambda self: self.admission.queued)
    queued_bytes = property(lambda self: self.admission.queued_bytes)
    free = property(lambda self: self.admission.free)
    readable = property(lambda self: self.admission.readable)
    reachable = property(lambda self: self.admission.reachable)
    idle = property(lambda self: self.admission.idle)

    def configure(self, limits: Limits, request_timeout: float) -> None:
        self.admission.limits = limits

    def has_room(self, size: int) -> bool:
        return self.admission.has_room(size, self.clock())

    def submit(self, job: Job) -> None:
        self.admission.offer(job)
        self.pump()

    def pump(self) -> None:
        for job in self.admission.start(self.clock()):
            self.running.append((job, self.hands.request(job)))

    def answer(self, status: int = 200, stderr: bytes = b"") -> Job:
        """The oldest running request's answer."""
        job, _ = self.running.pop(0)
        self.admission.answered(0.001)
        outcome = Outcome.COMPLETED if status < 400 else Outcome.FAILED
        self.hands.ended(
            job, Result(outcome, "" if status < 400 else "the worker failed", status, stderr, 0.001)
        )
        self.pump()
        return job

    def probe(self) -> None:
        pass

    def take_queued(self, which: Callable[[Job], bool]) -> list[Job]:
        return self.admission.take_queued(which)

    def wake_at(self) -> float:
        return self.admission.wake_at(self.clock())

    def expire(self) -> None:
        pass

    def close(self) -> tuple[list[Job], list[Job]]:
        running = [job for job, _ in self.running]
        self.running.clear()
        return running, self.admission.clear()


@dataclass
class Said:
    """An origin: what the daemon told it."""

    ended: list[tuple[Job, Result]] = field(default_factory=list)
    rejected: list[tuple[Message, str]] = field(default_factory=list)


class Origin:
    def __init__(self, said: Said) -> None:
        self.said = said

    def ended(self, job: Job, result: Result) -> None:
        self.said.ended.append((job, result))

    def rejected(self, message: Message, reason: str) -> None:
        self.said.rejected.append((message, reason))


@dataclass
class State:
    announced: bool = True
    down_since: float = float("inf")


class Source:
    what = "commands"

    def status(self) -> str:
        return ""


class FakeConnection:
    """A source kept connected and ready; it settles when told."""

    def __init__(self) -> None:
        self.state = State()
        self.source = Source()
        self.settled = True
        self.stopped = self.left = False

    def turn(self, now: float, health_interval: float, free: int) -> None:
        pass

    def wake_at(self, free: int) -> float:
        return float("inf")

    def stop(self) -> None:
        self.stopped = True

    def leave(self) -> None:
        self.left = True

    def disconnect(self) -> None:
        pass


class Lines(Sink):
    def __init__(self) -> None:
        self.handlers = []

    def job(self, text: str, job: Job, status: int, elapsed_ms: float) -> None:
        pass


class Told(Notifier):
    def __init__(self) -> None:
        super().__init__({})
        self.statuses: list[str] = []

    def notify(self, *fields: str) -> None:
        self.statuses += [f.removeprefix("STATUS=") for f in fields if f.startswith("STATUS=")]


@dataclass
class Built:
    daemon: Daemon
    pool: FakePool
    connection: FakeConnection
    clock: Clock
    overflow: Overflow
    waits: Waits


def settings(tmp_path: Path, *flags: str) -> Settings:
    argv = [
        "--channel",
        "commands",
        "--worker-script",
        WORKER,
        "--state-dir",
        str(tmp_path / "state"),
        *flags,
    ]
    return load(argv, {}, default_config=tmp_path / "none.toml")


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("asyncphp.test-engine")
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()


def build(
    given: Settings,
    log: logging.Logger,
    routes: Routes | None = None,
    reload: Callable[[], Settings] | None = None,
) -> Built:
    clock = Clock()
    waits = Waits(clock)
    counters = Counters()
    sink = Lines()
    overflow = Overflow(given.state_dir, given.max_spill_bytes, counters, Metrics(), log)
    made: dict[str, object] = {}

    def pool(hands: Hands) -> Pool:
        made["pool"] = FakePool(hands, clock)
        return made["pool"]  # type: ignore[return-value]

    def connections(hands: Hands) -> list[Connection]:
        made["connection"] = FakeConnection()
        return [made["connection"]]  # type: ignore[list-item]

    parts = Parts(
        waits,
        counters,
        Metrics(),
        Tracing(),
        overflow,
        routes or Routes(given.worker_script),
        Story(log, sink),
        pool,
        connections,
    )
    daemon = Daemon(given, log, sink, Told(), parts, reload=reload, clock=clock, wall=lambda: 1.7e9)
    return Built(daemon, made["pool"], made["connection"], clock, overflow, waits)  # type: ignore[arg-type]


def routes(given: Settings, log: logging.Logger) -> ReleaseRoutes:
    return ReleaseRoutes(
        given.worker_script, given.releases_root, "", given.release_wait, log, Story(log, Lines())
    )


def published(payload: object) -> Message:
    return Message("commands", json.dumps(payload).encode())


def test_a_message_becomes_a_request_to_the_worker_script(tmp_path: Path, log: logging.Logger) -> None:
    built = build(settings(tmp_path), log)
    built.daemon._on_published(published({"user": 42}))
    (job, request), *_ = built.pool.running
    assert job.body == b"user=42"
    assert WORKER.encode() in request and b"user=42" in request
    assert built.daemon.counters.received == 1
    built.pool.answer(200)
    assert built.daemon.counters.completed == 1


def test_a_bad_message_is_one_line_and_the_next_one_runs(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    built = build(settings(tmp_path), log)
    said = Said()
    built.daemon._on_entry(Message("jobs", b"[1, 2", origin=Origin(said), message_id="1-1"))
    [(message, reason)] = said.rejected
    assert message.message_id == "1-1" and "JSON" in reason, reason
    assert built.daemon.counters.rejected == 1
    assert "skipped a message on jobs" in caplog.text and "[1, 2" in caplog.text
    assert not built.pool.running
    built.daemon._on_published(published({"n": 1}))
    assert [job.body for job, _ in built.pool.running] == [b"n=1"]


def test_no_room_sends_a_published_message_to_the_spill_file_and_it_comes_back_in_order(
    tmp_path: Path, log: logging.Logger
) -> None:
    built = build(settings(tmp_path, "--max-in-flight", "1", "--max-queued", "1"), log)
    for n in range(4):
        built.daemon._on_published(published({"n": n}))
    # One running, one queued, two in the spill file: and what comes later goes behind them.
    assert (built.pool.in_flight, built.pool.queued, built.overflow.waiting) == (1, 1, 2)
    built.daemon._on_published(published({"n": 4}))
    assert built.overflow.waiting == 3
    ran = []
    for _ in range(40):  # bounded: five jobs, each answered once its turn puts it back
        built.daemon._turn(0.0)
        if built.pool.running:
            ran.append(built.pool.answer(200).body)
        if len(ran) == 5:
            break
    assert ran == [b"n=0", b"n=1", b"n=2", b"n=3", b"n=4"]
    assert built.daemon.counters.completed == 5


def test_a_job_waits_for_its_release_then_runs_its_script(tmp_path: Path, log: logging.Logger) -> None:
    root = tmp_path / "releases"
    root.mkdir()
    given = settings(
        tmp_path, "--worker-script", f"{root}/{{release}}/worker.php", "--releases-root", str(root)
    )
    release_routes = routes(given, log)
    built = build(given, log, release_routes)
    built.daemon._on_published(published({"_asyncphp": {"release": "r2"}, "n": 1}))
    assert not built.pool.running and release_routes.waiting == 1
    assert "1 waiting for release r2" in built.daemon._status_line()
    (root / "r2").mkdir()
    (root / "r2" / "worker.php").write_text("<?php\n")
    built.clock.now += 10  # past the first look again
    built.daemon._turn(0.0)
    (job, request), *_ = built.pool.running
    assert job.script == str(root / "r2" / "worker.php") and job.script.encode() in request
    assert release_routes.waiting == 0


def test_a_job_whose_release_never_comes_is_dead_lettered_with_the_reason(
    tmp_path: Path, log: logging.Logger
) -> None:
    root = tmp_path / "releases"
    root.mkdir()
    given = settings(
        tmp_path, "--worker-script", f"{root}/{{release}}/worker.php", "--releases-root", str(root),
        "--release-wait", "5",
    )  # fmt: skip
    built = build(given, log, routes(given, log))
    said = Said()
    entry = Message("jobs", b'{"_asyncphp": {"release": "gone"}}', origin=Origin(said), message_id="1-1")
    built.daemon._on_entry(entry)
    built.clock.now += 6
    built.daemon._turn(0.0)
    [(_, result)] = said.ended
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "release gone did not reach this host within release_wait (5 s)"


def test_sighup_applies_what_may_change_and_names_what_waits_for_a_restart(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    given = settings(tmp_path)
    new = settings(tmp_path, "--max-queued", "7", "--channel", "other")
    built = build(given, log, reload=lambda: new)
    built.daemon._reload_settings()
    assert built.daemon.settings.max_queued == 7
    assert built.pool.admission.limits.max_queued == 7
    assert built.daemon.settings.channels == ("commands",)
    assert "SIGHUP: settings reloaded; changed: max_queued" in caplog.text
    assert "SIGHUP: channels changed but take effect only after a restart" in caplog.text


def test_the_drain_waits_until_its_timeout_and_accounts_for_every_job_left(
    tmp_path: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    built = build(settings(tmp_path, "--max-in-flight", "1", "--drain-timeout", "5"), log)
    for n in range(3):
        built.daemon._on_published(published({"n": n}))
    built.daemon._stop_reason = "SIGTERM"
    built.connection.settled = False  # a settle still on its way: the drain waits for it too

    def answered() -> None:
        built.pool.answer(200)  # n=0 ends during the drain, and n=1 starts
        built.connection.settled = True

    built.waits.then[2] = answered
    built.daemon._drain()
    assert built.connection.stopped and built.connection.left
    assert built.clock.now >= 1005.0, "it waited out drain_timeout for n=1"
    assert "job 2 on commands still running in the pool (SIGTERM: drain ended)" in caplog.text
    # The job that never started is in the spill file, for the next start: nothing lost unsaid.
    again = Overflow(str(tmp_path / "state"), 1 << 20, Counters(), Metrics(), log)
    assert [m.payload for m in again.take(10)] == [b'{"n": 2}']
    again.close()
    assert "stopped · 3 received · 0 dispatched · 1 completed" in caplog.text
    assert "1 spilled · 1 unfinished" in caplog.text
