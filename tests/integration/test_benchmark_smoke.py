"""The benchmark, at a tiny size, so that it does not rot. Figures are printed, never asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from benchmarks import laravel, scenarios, scheduling
from benchmarks.__main__ import goals, table
from tests.conftest import ROOT

TINY = scenarios.Options(runs=1, burst=200, rate=100, latency_seconds=0.5, wrk_seconds=1, soak=1_000)


def test_scenarios_run_and_report() -> None:
    results = {
        "burst": scenarios.repeat(1, lambda: scenarios.burst(TINY)),
        "burst_journal": scenarios.repeat(1, lambda: scenarios.burst(TINY, logging="journal")),
        "latency": scenarios.repeat(1, lambda: scenarios.latency(TINY)),
        "soak": scenarios.repeat(1, lambda: scenarios.soak(TINY)),
        "seed": scenarios.repeat(1, lambda: scenarios.seed(TINY)),
    }
    assert results["latency"]["asyncphp_n"]["median"] == 50
    # Every job's line reached the private journald (and the start-up lines with them).
    assert results["burst_journal"]["journal_lines"]["median"] >= TINY.burst
    report = table(scenarios.machine(), results, {"burst_pure": "not tried here"}, TINY)
    assert "msg/s" in report and "p99" in report and "until all ten finished" in report
    assert "not run: not tried here" in report and "goals (medians of this run)" in report
    print("\n" + report)


def test_scheduling_scenarios_run_and_report() -> None:
    runs = {
        "scheduling_delayed": scheduling.delayed,
        "scheduling_priority": scheduling.priority,
        "scheduling_capped": scheduling.capped,
        "scheduling_rate": scheduling.rate,
        "scheduling_unique": scheduling.unique,
    }
    results = {name: scenarios.repeat(1, lambda run=run: run(scheduling.QUICK)) for name, run in runs.items()}
    assert results["scheduling_delayed"]["jobs"]["median"] == scheduling.QUICK.delayed
    report = table(scenarios.machine(), results, {}, TINY)
    for part in ("6. scheduling", "delayed:", "strict priority:", "per-stream cap:", "rate:", "unique:"):
        assert part in report
    # Each of the five figures has its goal(s): exactly once, lateness p50 and p99, the
    # move's cost, priority, the cap and the other stream beside it, the rate, the unique key.
    assert len(goals(results)) == 9
    print("\n" + report)


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None,
    reason="benchmarks/run installs nginx-light and wrk",
)
def test_pool_capacity_through_nginx() -> None:
    figures = scenarios.pool_capacity(TINY)
    assert set(figures) == {"c5", "c50", "cpu_us_c5", "cpu_us_c50"}
    assert figures["cpu_us_c5"] > 0, "nginx's own CPU, from /proc"


def test_cli_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "burst", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["results"]["burst"]["rate"]["median"] > 0
    assert any(goal["goal"].startswith("RSS") for goal in report["goals"])


def test_laravel_scenarios_run_and_report() -> None:
    tiny = laravel.Sizes(jobs=20, workers=2, timeout=120.0)
    results = {
        "laravel_plain": scenarios.repeat(1, lambda: laravel.asyncphp(tiny)),
        "laravel_cached": scenarios.repeat(1, lambda: laravel.asyncphp(tiny, "cached")),
        "laravel_queue_work": scenarios.repeat(1, lambda: laravel.queue_work(tiny)),
    }
    for figures in results.values():
        assert figures["jobs"]["median"] == 20 and figures["php_us_per_job"]["median"] > 0
    assert results["laravel_plain"]["daemon_us_per_job"]["median"] > 0
    report = table(scenarios.machine(), results, {}, TINY)
    assert "8. laravel: 20 trivial jobs" in report and "queue:work" in report
    assert any(goal.startswith("laravel:") for goal, _, _ in goals(results))
    print("\n" + report)
