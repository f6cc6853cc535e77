"""Traces across the queue: publisher span → the daemon's span per job → the worker's context."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncphp.caller import publish
from asyncphp.dev import sandbox
from asyncphp.dev.sandbox import Pool, RedisServer, Server
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for
from tests.unit.wire.test_meta import BAD_META

WORKER = PHP_DIR / "release_worker.php"  # logs the HTTP_TRACEPARENT it was given
TRACED = Path(__file__).with_name("traced_daemon.py")


def worker_traceparents(pool: Pool) -> dict[int, str]:
    return {int(n): trace for _, _, n, trace in (line.split() for line in lines(pool.worker_log))}


def test_the_daemon_s_span_is_the_publisher_s_child_and_the_worker_s_parent(
    tmp_path: Path, redis_server: RedisServer, pool: Pool
) -> None:
    spans_file, log = tmp_path / "spans.json", tmp_path / "daemon.log"
    command = [
        sys.executable, str(TRACED), "--redis-url", redis_server.url, "--fpm-socket", pool.listen,
        "--worker-script", str(WORKER), "--channel", "commands", "--traces", "true",
    ]  # fmt: skip
    env = sandbox.daemon_env({"ASYNCPHP_TEST_SPANS": str(spans_file), "PYTHONPATH": str(Path.cwd())})
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=output, env=env)
    daemon = Daemon(Server("asyncphp-daemon", process, log), log)
    try:
        daemon.wait_for("Subscribed to commands")
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("the web app").start_as_current_span("POST /signup") as web:
            assert publish({"n": 1}, redis_url=redis_server.url) == 1  # the context from OpenTelemetry's
        publish({"n": 2}, redis_url=redis_server.url)  # no trace: a root span of its own
        wait_for(lambda: len(worker_traceparents(pool)) == 2, what="both jobs")
    finally:
        assert daemon.stop() == 0
    spans: list[dict[str, Any]] = json.loads(spans_file.read_text())
    assert len(spans) == 2, spans
    by_job = {span["attributes"]["asyncphp.request_id"]: span for span in spans}
    traced, root = by_job[1], by_job[2]
    web_context = web.get_span_context()
    assert traced["context"]["trace_id"] == f"0x{web_context.trace_id:032x}"
    assert traced["parent_id"] == f"0x{web_context.span_id:016x}", "the publisher's span is its parent"
    assert root["parent_id"] is None
    assert traced["kind"] == "SpanKind.CONSUMER" and traced["attributes"]["asyncphp.outcome"] == "completed"
    assert [event["name"] for event in traced["events"]] == ["dispatched"]
    # The worker continues from the daemon's span: the same trace, the daemon's span as parent.
    span_id = traced["context"]["span_id"][2:]
    version, trace_id, parent_id, flags = worker_traceparents(pool)[1].split("-")
    assert (version, trace_id, parent_id) == ("00", f"{web_context.trace_id:032x}", span_id)
    assert int(flags, 16) & 1, "sampled"


def test_without_traces_the_context_reaches_the_worker_as_it_came_and_a_malformed_one_is_dropped(
    redis_server: RedisServer, pool: Pool, start_daemon: Any
) -> None:
    daemon = start_daemon(pool.listen, worker=WORKER)
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    publish({"n": 1}, redis_url=redis_server.url, traceparent=good, tracestate="vendor=1")
    client = redis.Redis.from_url(redis_server.url)
    client.publish("commands", json.dumps({"n": 2, "_asyncphp": {"traceparent": "00-garbage"}}))
    client.close()
    wait_for(lambda: len(worker_traceparents(pool)) == 2, what="both jobs")
    assert worker_traceparents(pool) == {1: good, 2: "-"}
    daemon.wait_for("traceparent '00-garbage' is malformed: dropped")


def _traced(tmp_path: Path, redis_server: RedisServer, pool: Pool, *flags: str) -> Daemon:
    spans_file, log = tmp_path / "spans.json", tmp_path / "daemon.log"
    command = [
        sys.executable, str(TRACED), "--redis-url", redis_server.url, "--fpm-socket", pool.listen,
        "--worker-script", str(WORKER), "--traces", "true", *flags,
    ]  # fmt: skip
    env = sandbox.daemon_env({"ASYNCPHP_TEST_SPANS": str(spans_file), "PYTHONPATH": str(Path.cwd())})
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=output, env=env)
    return Daemon(Server("asyncphp-daemon", process, log), log)


@pytest.mark.parametrize("source", ["channel", "stream"])
def test_bad_trace_metadata_is_one_job_s_problem_with_traces_on(
    tmp_path: Path, redis_server: RedisServer, pool: Pool, source: str
) -> None:
    # Old behaviour (issue 23, item 9): with traces on, a tracestate of false (and the like) raised in
    # the daemon's Redis handler, the connection was dropped with every pub/sub message read with it,
    # and a stream entry stayed pending, neither run nor dead-lettered: over these 37 cases, 66 jobs
    # never ran and 31 entries were left pending.
    flags = ("--channel", "commands") if source == "channel" else ("--stream", "jobs")
    daemon = _traced(tmp_path, redis_server, pool, *flags)
    client = redis.Redis.from_url(redis_server.url)
    try:
        daemon.wait_for("Subscribed to")
        messages = []
        for k, bad in enumerate(BAD_META):
            messages += [{"n": 2 * k, "_asyncphp": bad}, {"n": 2 * k + 1}]  # each bad one, then a good one
        for message in messages:
            if source == "channel":
                assert client.publish("commands", json.dumps(message)) == 1
            else:
                client.xadd("jobs", {"payload": json.dumps(message)})
        wait_for(
            lambda: len(worker_traceparents(pool)) == len(messages), what="every job, bad metadata or not"
        )
        assert sorted(worker_traceparents(pool)) == list(range(len(messages)))
        if source == "stream":
            wait_for(lambda: client.xpending("jobs", "asyncphp")["pending"] == 0, what="every entry settled")
            assert client.xlen("jobs:dead") == 0
    finally:
        assert daemon.stop() == 0
        client.close()
    text = daemon.log.read_text()
    assert "unexpected" not in text and "Traceback" not in text, text[-3000:]
    assert (
        text.count("malformed: dropped") + text.count("is not an object") == len(BAD_META) - 1
    )  # None: none
