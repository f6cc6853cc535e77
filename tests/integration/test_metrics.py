"""Prometheus metrics: scraped after a burst, the counters equal what was published."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable

import redis

from asyncphp.dev.sandbox import Pool, RedisServer, free_port
from tests.conftest import PHP_DIR
from tests.integration.conftest import Daemon, lines, wait_for

FAST = PHP_DIR / "fast.php"


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_counters_equal_what_was_published(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    port = free_port()
    start_daemon(pool.listen, "--metrics-listen", f"127.0.0.1:{port}", "--log-level", "WARNING", worker=FAST)
    client = redis.Redis.from_url(redis_server.url)
    with client.pipeline(transaction=False) as pipe:
        for i in range(500):
            pipe.publish("commands", json.dumps({"n": i}))
        pipe.publish("commands", b"not json")
        pipe.execute()
    client.close()
    wait_for(lambda: len(lines(pool.worker_log)) == 500, what="500 jobs")

    def settled() -> dict[str, float] | None:
        samples = scrape(port)
        return (
            samples
            if samples.get('asyncphp_jobs_ended_total{outcome="completed",source="commands"}') == 500
            else None
        )

    samples = wait_for(settled, what="the counters to catch up")
    assert isinstance(samples, dict)
    assert samples['asyncphp_messages_received_total{source="commands"}'] == 501
    assert samples['asyncphp_messages_rejected_total{source="commands"}'] == 1
    assert samples['asyncphp_jobs_dispatched_total{source="commands"}'] == 500
    assert samples['asyncphp_job_duration_seconds_count{source="commands"}'] == 500
    assert samples["asyncphp_jobs_in_flight"] == 0 and samples["asyncphp_jobs_queued"] == 0


def test_a_metrics_address_in_use_is_one_line_and_exit_2(
    redis_server: RedisServer, pool: Pool, start_daemon: Callable[..., Daemon]
) -> None:
    # Old behaviour (issue 23, item 8): a traceback from prometheus_client's start_http_server.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = start_daemon(pool.listen, "--metrics-listen", f"127.0.0.1:{port}", wait=False)
        assert daemon.server.process.wait(30) == 2
    text = daemon.log.read_text()
    assert f"ERROR metrics_listen 127.0.0.1:{port}: Address already in use" in text, text
    assert "Traceback" not in text
