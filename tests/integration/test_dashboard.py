"""The Grafana dashboard and the alert rules, proven on real servers: Debian's ``prometheus`` scrapes a
daemon (a channel and a stream) under load, with failures, retries, dead letters, spills, drops, a
saturated pool, a stream falling behind and finally a stopped daemon. Every panel's PromQL and every
alert's expression is evaluated through Prometheus's HTTP API, which must answer with data and the
labels the panel's legend shows; the rules are also checked and unit-tested with ``promtool``."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from asyncphp.core.jobs import Outcome
from asyncphp.dev.sandbox import Pool, RedisServer, Server, free_port
from tests.conftest import PHP_DIR, ROOT
from tests.integration.conftest import Daemon, wait_for

DASHBOARDS = ROOT / "dashboards"
DASHBOARD = DASHBOARDS / "asyncphp.json"
ALERTS = DASHBOARDS / "alerts.yml"
ALERT_TESTS = DASHBOARDS / "alerts_test.yml"
BEHAVE = PHP_DIR / "behave.php"
JOB = "asyncphp"  # the scrape job the alert rules expect
OUTCOMES = {outcome.value for outcome in Outcome}
SOURCES = {"commands", "jobs"}  # the daemon's channel and stream
ROUNDS = 8  # of steady load
NOTES = 10  # completed jobs per source and round: a round fits in the queue (15)
STREAM_RATE = 50  # jobs/s of the stream: beyond it entries wait, and the lag grows


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/apt-install prometheus")
    return found


def load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncphp_dashboard_render", DASHBOARDS / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_renderer()


# Without servers: the files themselves.


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name], capture_output=True, text=True, cwd=DASHBOARDS
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance", "source"}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for name in ("instance", "source"):
        assert (
            variables[name]["multi"] and variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        )
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= set(variables), (panel["title"], used)
    assert set(render.KEY_PANELS) <= {p["title"] for p in panels}


# On real servers.


class Prometheus:
    """Debian's prometheus, started here and stopped by its PID; its HTTP API."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> Any:
        return render.api(self.url, path, params)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        data = self.api("/api/v1/query", **params)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float:
        """The value of a query that answers one series (NaN when it answers none)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan

    def ready(self) -> bool:
        if self.server.process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {self.server.process.returncode}:\n{self.server.log.read_text()}"
            )
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        """Active alerts (pending or firing) by name, as Prometheus's own rule evaluation has them."""
        found: dict[str, list[dict[str, Any]]] = {}
        for alert in self.api("/api/v1/alerts")["alerts"]:
            found.setdefault(alert["labels"]["alertname"], []).append(alert)
        return found

    def rules(self) -> dict[str, dict[str, Any]]:
        groups = self.api("/api/v1/rules", type="alert")["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    started: list[Server] = []

    def start(target_port: int) -> Prometheus:
        port = free_port()
        config = {  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=2))
        log = tmp_path / "prometheus.log"
        args = [
            tool("prometheus"), f"--config.file={config_file}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]  # fmt: skip
        with log.open("wb") as output:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        server = Server("prometheus", process, log)
        started.append(server)
        prometheus = Prometheus(server, port)
        wait_for(prometheus.ready, what="prometheus to be ready (/-/ready)")
        return prometheus

    yield start
    for server in started:
        server.stop()


def variables(**overrides: str) -> dict[str, str]:
    """Grafana's variables as the test fills them in: every host and source; windows that cover the
    whole run (a real dashboard's $__rate_interval is shorter: the same queries)."""
    return {
        "job": JOB,
        "instance": ".*",
        "source": ".*",
        "__rate_interval": "2m",
        "__range": "5m",
        **overrides,
    }


def legend_labels(target: dict[str, Any]) -> set[str]:
    return set(render.LEGEND_LABEL.findall(target.get("legendFormat", "")))


# Label values each panel's targets must show, beyond the labels of its legend: what this run caused.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "Throughput by outcome/A": {"outcome": {"completed", "failed", "dropped"}},
    "Messages received, rejected, dispatched/A": {"source": {"commands", "jobs"}},
    "Messages received, rejected, dispatched/B": {"source": {"commands", "jobs"}},
    "Messages received, rejected, dispatched/C": {"source": {"commands", "jobs"}},
    "Throughput per host and source/A": {"source": {"commands", "jobs"}},
    "Job duration p99 per host and source/A": {"source": {"commands", "jobs"}},
    "Retries/A": {"source": {"jobs"}},
    "Dead letters/A": {"source": {"jobs"}},
    "Spilled and dropped/A": {"source": {"commands"}},
    "Spilled and dropped/B": {"source": {"commands"}},
    "Stream lag/A": {"source": {"jobs"}},
    "Stream pending/A": {"source": {"jobs"}},
}
POSITIVE = {  # targets whose value over the run cannot be 0
    "Daemons up/A", "Jobs ended/A", "Failure ratio/A", "Dead letters in range/A", "Throughput by outcome/A",
    "Job duration percentiles/A", "Job duration percentiles/B", "Job duration percentiles/C",
    "In flight and queued, per host/C",
}  # fmt: skip


def check_panels(prometheus: Prometheus, instance: str) -> int:
    """Every target of every panel, evaluated with every host and source, then with the concrete
    ones; returns how many queries answered."""
    dashboard = json.loads(DASHBOARD.read_text())
    answered = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            key = f"{panel['title']}/{target['refId']}"
            for filled in (
                variables(),
                variables(instance=re.escape(instance).replace("\\", "\\\\"), source="(commands|jobs)"),
            ):
                expr = render.substitute(target["expr"], filled)
                assert "$" not in expr, expr
                result = prometheus.query(expr)
                assert result, f"{key}: no data for {expr}"
                for series in result:
                    labels = series["metric"]
                    assert legend_labels(target) <= set(labels), (key, labels)
                    if "instance" in labels:
                        assert labels["instance"] == instance, (key, labels)
                    assert labels.get("job", JOB) == JOB, (key, labels)
                for name, values in EXPECTED.get(key, {}).items():
                    assert {s["metric"].get(name) for s in result} >= values, (key, name, result)
                    # Every outcome of every source is exported from the start, at 0.
                    assert {s["metric"].get(name) for s in result} <= values | OUTCOMES | SOURCES, key
                if key in POSITIVE:
                    assert any(float(s["value"][1]) > 0 for s in result), (key, result)
                answered += 1
            # One source only: the $source filter holds.
            one = prometheus.query(render.substitute(target["expr"], variables(source="commands")))
            assert all(s["metric"].get("source", "commands") == "commands" for s in one), (key, one)
    return answered


def check_template_variables(prometheus: Prometheus, instance: str) -> None:
    """Grafana's label_values(metric, label) is /api/v1/label/<label>/values?match[]=metric."""
    dashboard = json.loads(DASHBOARD.read_text())
    expected = {"job": [JOB], "instance": [instance], "source": ["commands", "jobs"]}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        selector = render.substitute(match.group(1), variables(instance=".*"))
        values = prometheus.api(f"/api/v1/label/{match.group(2)}/values", **{"match[]": selector})
        assert sorted(values) == expected[variable["name"]], (variable["name"], values)


def publish_round(client: redis.Redis, round_number: int) -> int:
    """A round of steady load on both sources; returns the jobs it makes end: NOTES completed on each,
    a 500 on each (once on the channel, twice on the stream: --max-attempts 2, then dead-lettered),
    and a message on each that is not JSON (rejected; the stream's is dead-lettered)."""
    with client.pipeline(transaction=False) as pipe:
        for i in range(NOTES):
            note = json.dumps({"do": "note", "text": f"round {round_number} note {i}"})
            pipe.publish("commands", note)
            pipe.xadd("jobs", {"payload": note})
        failing = json.dumps({"do": "status", "code": 500})
        pipe.publish("commands", failing)
        pipe.xadd("jobs", {"payload": failing})
        pipe.publish("commands", b"not json")
        pipe.xadd("jobs", {"payload": b"not json"})
        pipe.execute()
    return 2 * NOTES + 3


@pytest.mark.timeout(240)
def test_every_panel_and_alert_answers_from_a_real_daemon(
    tmp_path: Path,
    redis_server: RedisServer,
    pool: Pool,
    start_daemon: Callable[..., Daemon],
    start_prometheus: Callable[[int], Prometheus],
) -> None:
    started = time.time()
    port = free_port()
    (tmp_path / "state").mkdir()
    daemon = start_daemon(
        pool.listen,
        "--channel", "commands", "--stream", "jobs",
        "--max-attempts", "2", "--retry-delay", "0.1", "--stream-rate", f"jobs={STREAM_RATE}/s",
        "--max-queued", "15", "--state-dir", str(tmp_path / "state"), "--max-spill-bytes", "300",
        "--metrics-listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
        worker=BEHAVE,
    )  # fmt: skip
    instance = f"127.0.0.1:{port}"
    prometheus = start_prometheus(port)
    up = f'up{{job="{JOB}", instance="{instance}"}}'
    wait_for(lambda: prometheus.value(up) == 1, what="the daemon's target to be up")
    rules = prometheus.rules()
    assert set(rules) == {
        "AsyncphpDaemonDown", "AsyncphpStreamLagGrowing", "AsyncphpDeadLettersRising",
        "AsyncphpPoolSaturated",
    }  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)

    # 1. Steady load with failures: each round waits until Prometheus has scraped all of it.
    phases = [(time.time(), "steady load, with failures")]
    ended = 0.0
    for n in range(ROUNDS):
        ended += publish_round(client, n)
        wait_for(
            lambda total=ended: prometheus.value("sum(asyncphp_jobs_ended_total)") >= total,
            what=f"round {n}'s jobs in prometheus",
        )
    # Idle, and caught up: the stream's rate (for the backlog phase) may leave entries unread a while.
    idle = (
        "sum(asyncphp_jobs_in_flight) + sum(asyncphp_jobs_queued) + max(asyncphp_stream_pending)"
        " + max(asyncphp_stream_lag)"
    )
    wait_for(lambda: prometheus.value(idle) == 0, what="the daemon to be idle in prometheus")
    # Every job ran: the series exist from the start (at 0), and none has risen.
    assert not prometheus.query('asyncphp_jobs_ended_total{outcome="dropped"} > 0')

    # A healthy daemon, but with dead letters: only that alert answers, and fires (it has no `for`).
    exprs = {name: rule["query"] for name, rule in prometheus.rules().items()}
    healthy = {name: prometheus.query(expr) for name, expr in exprs.items()}
    assert {name for name, result in healthy.items() if result} == {"AsyncphpDeadLettersRising"}, healthy
    (dead,) = healthy["AsyncphpDeadLettersRising"]
    assert dead["metric"] == {"job": JOB, "instance": instance, "source": "jobs"}
    assert float(dead["value"][1]) >= ROUNDS  # 2 a round; the first ones are not seen by increase()
    alerts = wait_for(lambda: prometheus.alerts().get("AsyncphpDeadLettersRising"), what="the alert to fire")
    assert isinstance(alerts, list) and alerts[0]["state"] == "firing"

    # 2. A saturated pool: slow jobs on the channel fill every slot, the queue (15), the spill file
    # (300 bytes), and the rest is dropped.
    phases.append((time.time(), "slow jobs: pool saturated, spills, drops"))
    with client.pipeline(transaction=False) as pipe:
        for _ in range(30):
            pipe.publish("commands", json.dumps({"do": "slow", "seconds": 1}))
        pipe.execute()
    saturated = wait_for(lambda: prometheus.query(exprs["AsyncphpPoolSaturated"]), what="the pool saturated")
    assert isinstance(saturated, list) and saturated[0]["metric"]["instance"] == instance
    pending = wait_for(lambda: prometheus.alerts().get("AsyncphpPoolSaturated"), what="the saturated alert")
    assert isinstance(pending, list) and pending[0]["state"] == "pending"  # for: 5m
    spilled_and_dropped = (
        'sum(asyncphp_messages_spilled_total) > 0 and sum(asyncphp_jobs_ended_total{outcome="dropped"}) > 0'
    )
    wait_for(lambda: prometheus.query(spilled_and_dropped), what="spills and drops in prometheus")
    wait_for(lambda: prometheus.value(idle) == 0, timeout=30, what="the slow jobs to finish")

    # 3. A stream falling behind: entries added faster than --stream-rate lets the daemon take them,
    # round after round, until the lag alert's expression answers.
    phases.append((time.time(), "stream backlog"))
    lag = 'max(asyncphp_stream_lag{source="jobs"})'
    last = prometheus.value(lag)
    growing: list[dict[str, Any]] = []
    for n in range(12):
        with client.pipeline(transaction=False) as pipe:
            for i in range(2 * STREAM_RATE):
                pipe.xadd("jobs", {"payload": json.dumps({"do": "note", "text": f"backlog {n} {i}"})})
            pipe.execute()
        wait_for(lambda seen=last: prometheus.value(lag) > seen, what=f"the lag to grow past {last:g}")
        last = prometheus.value(lag)
        growing = prometheus.query(exprs["AsyncphpStreamLagGrowing"])
        if growing:
            break
    assert growing, f"the lag alert never answered (lag {last:g})"
    assert growing[0]["metric"] == {"job": JOB, "source": "jobs"}
    wait_for(lambda: prometheus.alerts().get("AsyncphpStreamLagGrowing"), what="the lag alert pending")
    wait_for(lambda: prometheus.value(lag) == 0, timeout=40, what="the backlog to drain")
    assert not prometheus.query(exprs["AsyncphpStreamLagGrowing"])  # drained: the lag is 0 again

    # Every panel, while the daemon runs; the template variables' queries.
    answered = check_panels(prometheus, instance)
    check_template_variables(prometheus, instance)

    # 4. The daemon stops: its target goes down, and the down alert's expression answers.
    phases.append((time.time(), "daemon stopped"))
    assert daemon.stop() == 0
    down = wait_for(lambda: prometheus.query(exprs["AsyncphpDaemonDown"]), what="the target to be down")
    assert isinstance(down, list) and down[0]["metric"] == {
        "__name__": "up",
        "job": JOB,
        "instance": instance,
    }
    wait_for(lambda: prometheus.alerts().get("AsyncphpDaemonDown"), what="the down alert pending")
    assert all(rule["health"] == "ok" and not rule.get("lastError") for rule in prometheus.rules().values())

    # The renderer's range queries over the whole run: the picture in docs/operating.md comes from here.
    end = time.time()
    captured = render.capture(prometheus.url, started, end, 1.0, variables(__rate_interval="5s"))
    captured["phases"] = phases
    for panel in captured["panels"]:
        assert panel["series"], panel["title"]
    keep = os.environ.get("ASYNCPHP_DASHBOARD_CAPTURE")
    if keep:
        Path(keep).write_text(json.dumps(captured) + "\n")
    client.close()
    print(f"\n{answered} panel queries answered; run of {end - started:.0f} s")
