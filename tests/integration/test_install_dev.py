"""asyncphp install --prefix (the rendered files pass their linters and agree), and asyncphp dev: from
the checkout, and from the wheel scripts/build-wheel makes (twice: byte for byte the same), installed
(not editable) with the runtime lock into a fresh virtualenv, where the unit, the settings, the pool and
the worker come from inside the package."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from asyncphp.caller import publish
from asyncphp.dev.sandbox import find_php_fpm, render_pool
from tests.conftest import ROOT
from tests.integration.conftest import wait_for

# Two builds of the wheel (18 modules compiled with mypyc each) count against the first test that
# uses it.
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Installed:
    """How to run asyncphp from one kind of install."""

    command: list[str]
    bin: Path  # where its asyncphp-daemon is
    cwd: Path


def _build_wheel(dist: Path) -> Path:
    built = subprocess.run(
        [ROOT / "scripts/build-wheel", "--python", sys.executable, "--outdir", str(dist)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel_file,) = dist.glob("asyncphp-*.whl")
    return wheel_file


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel of this tree, built twice (each from a copy in a temp dir of its own)."""
    return _build_wheel(tmp_path_factory.mktemp("dist")), _build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def wheel(wheels: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in a virtualenv of its own, its dependencies from the runtime lock."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    locked = subprocess.run(
        [ROOT / "scripts/pip-locked", venv / "bin/python", ROOT / "requirements/runtime.lock"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert locked.returncode == 0, locked.stderr[-3000:]
    pip = subprocess.run(
        [venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", str(wheels[0])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    return Installed([str(venv / "bin/asyncphp")], venv / "bin", tmp_path_factory.mktemp("elsewhere"))


def test_two_builds_of_one_tree_give_the_same_wheel(wheels: tuple[Path, Path]) -> None:
    first, second = (hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels)
    assert first == second, f"{wheels[0].name}: {first} and {second}"
    assert wheels[0].name.startswith("asyncphp-") and "-cp3" in wheels[0].name, "compiled"


@pytest.fixture(params=["checkout", "wheel"])
def asyncphp(request: pytest.FixtureRequest) -> Installed:
    if request.param == "wheel":
        installed: Installed = request.getfixturevalue("wheel")
        return installed
    return Installed([sys.executable, "-m", "asyncphp"], Path(sys.executable).parent, ROOT)


def test_the_wheel_carries_the_files_and_no_checkout_is_on_its_path(wheel: Installed) -> None:
    code = (
        "import asyncphp, asyncphp.files as f; print(asyncphp.__file__); "
        "print(f.shipped(f.WORKER).read_text())"
    )
    done = subprocess.run([wheel.bin / "python", "-c", code], capture_output=True, text=True, cwd=wheel.cwd)
    assert done.returncode == 0, done.stderr
    where, shipped = done.stdout.split("\n", 1)
    assert str(ROOT) not in where and "site-packages" in where
    assert shipped.rstrip("\n") == (ROOT / "fpm-pool" / "worker.php").read_text().rstrip("\n")


def test_install_into_a_prefix(tmp_path: Path, asyncphp: Installed) -> None:
    def install(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*asyncphp.command, "install", *args], capture_output=True, text=True, cwd=asyncphp.cwd
        )

    dry = install("--prefix", str(tmp_path), "--php", "8.2")
    assert dry.returncode == 0, dry.stderr
    assert "nothing written" in dry.stdout and not any(tmp_path.iterdir())

    done = install("--prefix", str(tmp_path), "--php", "8.2", "--yes")
    assert done.returncode == 0, done.stderr
    assert (
        "✓ pool, unit and settings agree: socket /run/php/asyncphp-commands.sock, group www-data"
        in done.stdout
    )
    assert "systemctl enable --now asyncphp-daemon" in done.stdout
    unit = tmp_path / "etc/systemd/system/asyncphp-daemon.service"
    pool = tmp_path / "etc/php/8.2/fpm/pool.d/commands.conf"
    settings = tmp_path / "etc/asyncphp/daemon.toml"
    assert f"ExecStart={asyncphp.bin / 'asyncphp-daemon'} --config" in unit.read_text()
    # The worker to copy is the package's own: inside the virtualenv, for a wheel.
    worker = re.search(r"install -D -m 0644 (\S+) /usr/local/lib/asyncphp/worker\.php", done.stdout)
    assert worker and Path(worker.group(1)).is_file(), done.stdout
    assert worker.group(1).endswith("asyncphp/files/worker.php")
    if asyncphp.cwd != ROOT:
        assert "site-packages" in worker.group(1)

    # The unit, as systemd sees it (ExecStart points at this environment's daemon).
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    # The pool, as php-fpm sees it; only the access log moves, so the lint writes nothing in /var/log.
    lint = tmp_path / "lint.conf"
    lint.write_text(render_pool(pool, {"access.log": str(tmp_path / "access.log")}))
    done_lint = subprocess.run([find_php_fpm(), "-t", "-y", str(lint)], capture_output=True, text=True)
    assert done_lint.returncode == 0, done_lint.stderr
    # One socket, one group, in all three.
    assert re.search(r"^listen = /run/php/asyncphp-commands.sock$", pool.read_text(), re.M)
    assert 'fpm_socket = "/run/php/asyncphp-commands.sock"' in settings.read_text()
    assert re.search(r"^listen.group = www-data$", pool.read_text(), re.M)
    assert "SupplementaryGroups=www-data" in unit.read_text()

    again = install("--prefix", str(tmp_path), "--php", "8.2")
    assert again.stdout.count("unchanged") == 3
    settings.write_text(settings.read_text().replace("max_in_flight = 5", "max_in_flight = 7"))
    diff = install("--prefix", str(tmp_path), "--php", "8.2")
    assert "-max_in_flight = 7" in diff.stdout and "+max_in_flight = 5" in diff.stdout
    assert "max_in_flight = 7" in settings.read_text(), "nothing changed without --yes"


def test_dev_runs_the_sandbox_until_ctrl_c(asyncphp: Installed) -> None:
    process = subprocess.Popen(
        [*asyncphp.command, "dev"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, cwd=asyncphp.cwd,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        banner = [process.stdout.readline() for _ in range(4)]
        url = re.search(r"redis (redis://\S+)", banner[0])
        worker_log = re.search(r"worker log: +(\S+)", banner[2])
        assert url and worker_log, banner
        output: list[str] = []

        def subscribed() -> bool:
            line = process.stdout.readline() if process.stdout else ""
            output.append(line)
            return "Subscribed to commands" in line

        wait_for(subscribed, what="the daemon to subscribe")
        assert publish({"timestamp": "from dev"}, redis_url=url.group(1)) == 1
        # Ctrl-C while the worker runs the job (it logs the timestamp, then takes a second).
        log = Path(worker_log.group(1))
        wait_for(lambda: log.exists() and log.read_text() == "from dev\n", what="the job to run")
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole process group
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0, "".join(output) + rest
        assert "stopping (SIGINT): 1 in flight, 0 queued" in rest
        assert "stopped · 1 received · 1 dispatched · 1 completed" in rest
