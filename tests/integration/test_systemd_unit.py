"""The shipped unit under a real systemd: Type=notify start, journal, group access to the pool, restarts.

The pool runs as the shipped commands.conf says (www-data workers, a www-data 0660 socket under
/run/php), as a php8.2-fpm.service of the namespace; the daemon runs as the shipped unit says
(DynamicUser, SupplementaryGroups=www-data, the hardening), with only ExecStart and the settings
changed to point at this checkout and the test's Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncphp.caller import publish
from asyncphp.dev.sandbox import RedisServer, find_php_fpm, render_pool
from tests.conftest import POOL_CONF, ROOT, WORKER
from tests.integration.conftest import wait_for
from tests.integration.systemd_ns import NamespacedSystemd, unavailable

UNIT = ROOT / "systemd" / "asyncphp-daemon.service"
RUN = "/run/asyncphp-test"  # inside the namespace: a tmpfs, invisible to the host


@pytest.fixture(autouse=True)
def needs_systemd() -> None:
    """Skip with the reason on a machine that cannot boot systemd; in CI that is a failure."""
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the systemd tests must run in CI: {reason}")
        pytest.skip(reason)


def test_unit_passes_systemd_analyze_verify() -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, check=False
    )
    # The only complaint allowed is the ExecStart of an install that does not exist on this machine.
    problems = [line for line in done.stderr.splitlines() if "/opt/asyncphp/venv/bin" not in line]
    assert problems == []


def test_unit_hardening_scores_2_or_lower() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    score = float(done.stdout.rsplit("Overall exposure level for asyncphp-daemon.service:", 1)[1].split()[0])
    print(f"\nsystemd-analyze security: {score}")
    assert score <= 2.0


def _pool_unit(workdir: Path) -> str:
    conf = workdir / "php-fpm.conf"
    conf.write_text(
        f"[global]\npid = {RUN}/php-fpm.pid\nerror_log = {RUN}/php-fpm.log\ndaemonize = no\n\n"
        + render_pool(
            POOL_CONF,
            {"access.log": f"{RUN}/access.log", "env[ASYNCPHP_WORKER_LOG]": f"{RUN}/log/worker.log"},
        )
    )
    return f"""[Unit]
Description=the shipped asyncphp pool, as Debian's php8.2-fpm.service would run it
[Service]
Type=notify
RuntimeDirectory=php
ExecStartPre=/bin/mkdir -p {RUN}/log
ExecStartPre=/bin/chown www-data:www-data {RUN}/log
ExecStartPre=/bin/cp {WORKER} {RUN}/worker.php
ExecStart={find_php_fpm()} --nodaemonize --fpm-config {conf}
"""


def _test_install() -> str:
    """Drop-in lines that let the service see this test's interpreter and checkout.

    The shipped unit hides /root and /home (ProtectHome=yes) and gives the service its own /tmp
    (PrivateTmp=yes); a pyenv interpreter or a CI checkout may live there. A production install in
    /opt/asyncphp/venv needs none of this.
    """
    paths = sorted({Path(p).resolve() for p in (sys.base_prefix, sys.prefix, ROOT)})
    hidden = [p for p in paths if str(p).startswith(("/root/", "/home/", "/tmp/"))]
    lines = [f"BindReadOnlyPaths={p}" for p in hidden]
    if any(not str(p).startswith("/tmp/") for p in hidden):
        lines.insert(0, "ProtectHome=tmpfs")  # an empty /root, into which the binds above go
    return "".join(line + "\n" for line in lines)


@pytest.fixture
def systemd(tmp_path: Path, redis_server: RedisServer) -> Iterator[NamespacedSystemd]:
    dropin = f"""[Service]
ExecStart=
ExecStart={sys.executable} -m asyncphp.loop.daemon --config /dev/null
Environment=ASYNCPHP_REDIS_URL={redis_server.url} ASYNCPHP_WORKER_SCRIPT={RUN}/worker.php
{_test_install()}"""
    units = {
        "php8.2-fpm.service": _pool_unit(tmp_path),
        "asyncphp-daemon.service": UNIT.read_text(),
        "asyncphp-daemon.service.d/test.conf": dropin,
    }
    expose = [Path(sys.base_prefix), Path(sys.prefix), ROOT, tmp_path]
    ns = NamespacedSystemd(tmp_path, units, expose)
    try:
        ns.wait_running()
        yield ns
    finally:
        ns.stop()


def test_unit_starts_serves_logs_restarts_and_stops(
    systemd: NamespacedSystemd, redis_server: RedisServer
) -> None:
    systemd.run("systemctl", "start", "php8.2-fpm.service")
    # Type=notify: this returns only once the daemon has sent READY=1.
    systemd.run("systemctl", "start", "asyncphp-daemon.service")
    state = systemd.show("asyncphp-daemon.service", "ActiveState", "StatusText", "MainPID", "User")
    assert state["ActiveState"] == "active"
    assert state["StatusText"].startswith("subscribed to commands · 0 dispatched")
    journal = systemd.journal("asyncphp-daemon.service")
    assert "Connected to redis on 127.0.0.1:" in journal
    assert "Subscribed to commands" in journal

    assert publish({"timestamp": "through systemd"}, redis_url=redis_server.url) == 1
    wait_for(
        lambda: "job 1 on commands: status 200" in systemd.journal("asyncphp-daemon.service"),
        what="the job's line in the journal",
    )
    log = systemd.run("cat", f"{RUN}/log/worker.log").stdout
    assert log == "through systemd\n"
    # By default the line comes through stderr, which journald reads: its priority from the
    # line's <6> prefix, and no fields of the daemon's own.
    entry = _job_entry(systemd, "job 1 on commands: status 200")
    assert (entry["PRIORITY"], entry["SYSLOG_IDENTIFIER"]) == ("6", "asyncphp-daemon")
    assert "ASYNCPHP_STATUS" not in entry

    systemd.run("systemctl", "reload", "asyncphp-daemon.service")
    wait_for(
        lambda: "SIGHUP: settings reloaded; changed: nothing" in systemd.journal("asyncphp-daemon.service"),
        what="the reload in the journal",
    )

    # A killed daemon comes back (Restart=always, RestartSec=5s) and subscribes again; the one
    # that comes back sends its job lines as journal entries with fields (journal_fields).
    dropins = "/run/systemd/system/asyncphp-daemon.service.d"
    systemd.run("mkdir", "-p", dropins)
    systemd.run(
        "sh", "-c", f"echo '[Service]\nEnvironment=ASYNCPHP_JOURNAL_FIELDS=true' > {dropins}/fields.conf"
    )
    systemd.run("systemctl", "daemon-reload")
    first_pid = state["MainPID"]
    systemd.run("kill", "-9", first_pid)

    def restarted() -> bool:
        now = systemd.show("asyncphp-daemon.service", "ActiveState", "MainPID", "NRestarts")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", first_pid)

    wait_for(restarted, timeout=30, what="systemd to restart the killed daemon")
    assert publish({"timestamp": "after the restart"}, redis_url=redis_server.url) == 1
    wait_for(
        lambda: "after the restart" in systemd.run("cat", f"{RUN}/log/worker.log").stdout,
        what="a job after the restart",
    )
    wait_for(
        lambda: (
            "job 1 on commands: status 200"
            in systemd.journal("asyncphp-daemon.service").split("Subscribed to commands")[-1]
        ),
        what="the restarted daemon's job line in the journal",
    )
    entry = _job_entry(systemd, "job 1 on commands: status 200")
    assert (entry["ASYNCPHP_REQUEST_ID"], entry["ASYNCPHP_CHANNEL"]) == ("1", "commands")
    assert (entry["ASYNCPHP_STATUS"], entry["PRIORITY"]) == ("200", "6")
    assert float(entry["ASYNCPHP_DURATION_MS"]) > 0
    assert entry["SYSLOG_IDENTIFIER"] == "asyncphp-daemon"

    systemd.run("systemctl", "stop", "asyncphp-daemon.service")
    # A clean exit inside TimeoutStopSec: "success", not "timeout" (which a SIGKILL would give).
    final = systemd.show("asyncphp-daemon.service", "ActiveState", "Result")
    assert (final["ActiveState"], final["Result"]) == ("inactive", "success")
    assert "stopped · " in systemd.journal("asyncphp-daemon.service")


def _job_entry(systemd: NamespacedSystemd, text: str) -> dict[str, str]:
    """The newest journal entry of the unit whose message contains ``text``."""
    out = systemd.run("journalctl", "-u", "asyncphp-daemon.service", "-o", "json", "--no-pager").stdout
    entries = [json.loads(line) for line in out.splitlines()]
    found = [e for e in entries if isinstance(e.get("MESSAGE"), str) and text in e["MESSAGE"]]
    assert found, f"no journal entry with {text!r}"
    return found[-1]  # type: ignore[no-any-return]


def test_unit_does_not_restart_on_bad_settings(systemd: NamespacedSystemd, tmp_path: Path) -> None:
    dropins = "/run/systemd/system/asyncphp-daemon.service.d"
    systemd.run("mkdir", "-p", dropins)
    systemd.run(
        "sh", "-c", f"echo '[Service]\nEnvironment=ASYNCPHP_FPM_SOCKET=relative.sock' > {dropins}/bad.conf"
    )
    systemd.run("systemctl", "daemon-reload")
    done = systemd.run("systemctl", "start", "asyncphp-daemon.service", check=False)
    assert done.returncode != 0
    # systemd decides when the process exits: a restart that is due waits out RestartSec in
    # SubState auto-restart (ActiveState activating); SubState failed is final, nothing restarts it.
    wait_for(
        lambda: systemd.show("asyncphp-daemon.service", "SubState")["SubState"] in ("failed", "auto-restart"),
        what="systemd's decision about a restart",
    )
    state = systemd.show("asyncphp-daemon.service", "ActiveState", "SubState", "NRestarts", "ExecMainStatus")
    assert state == {"ActiveState": "failed", "SubState": "failed", "NRestarts": "0", "ExecMainStatus": "2"}
    journal = systemd.journal("asyncphp-daemon.service")
    assert "invalid setting fpm_socket (from $ASYNCPHP_FPM_SOCKET)" in journal
    assert "Scheduled restart job" not in journal


def test_host_tmp_is_left_alone(tmp_path: Path) -> None:
    # A canary: the recipe's masks and tmpfs must keep systemd-tmpfiles away from the real /tmp.
    canary = Path("/tmp") / f"asyncphp-canary-{tmp_path.name}"
    canary.write_text("still here")
    try:
        ns = NamespacedSystemd(tmp_path, {}, [tmp_path])
        try:
            ns.wait_running()
        finally:
            ns.stop()
        assert canary.read_text() == "still here"
    finally:
        canary.unlink()
    assert shutil.which("systemctl")


def test_a_stuck_loop_is_killed_by_the_watchdog_and_restarted(systemd: NamespacedSystemd) -> None:
    dropins = "/run/systemd/system/asyncphp-daemon.service.d"
    systemd.run("mkdir", "-p", dropins)
    systemd.run(
        "sh", "-c", f"printf '[Service]\\nWatchdogSec=2s\\nRestartSec=1s\\n' > {dropins}/watchdog.conf"
    )
    systemd.run("systemctl", "daemon-reload")
    systemd.run("systemctl", "start", "php8.2-fpm.service")
    systemd.run("systemctl", "start", "asyncphp-daemon.service")
    watched = ("MainPID", "WatchdogUSec", "ActiveEnterTimestampMonotonic")
    state = systemd.show("asyncphp-daemon.service", *watched)
    assert state["WatchdogUSec"] == "2s"
    ready = int(state["ActiveEnterTimestampMonotonic"])  # µs: when READY=1 made it active

    def pinged_past_watchdog_sec() -> bool:
        """A WATCHDOG=1 from the same process more than WatchdogSec after READY=1 (systemd records
        the last one's time): the pings keep it alive."""
        now = systemd.show("asyncphp-daemon.service", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert (now["MainPID"], now["NRestarts"]) == (state["MainPID"], "0"), now
        return int(now["WatchdogTimestampMonotonic"]) > ready + 2_000_000

    wait_for(pinged_past_watchdog_sec, what="a watchdog ping more than WatchdogSec after READY=1")
    assert "Watchdog timeout" not in systemd.journal("asyncphp-daemon.service")

    systemd.run("kill", "-STOP", state["MainPID"])  # a loop that no longer turns

    def restarted() -> bool:
        now = systemd.show("asyncphp-daemon.service", "ActiveState", "MainPID")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", state["MainPID"])

    wait_for(restarted, timeout=30, what="the watchdog to restart the daemon")
    assert "Watchdog timeout" in systemd.journal("asyncphp-daemon.service")
