"""A real systemd booted as PID 1 in private namespaces, for tests of the unit.

Follows the team's tried recipe (shared/field-notes.md): tmpfs over every place systemd writes, all
sysinit and local-fs units masked but journald, and a target of our own, so the host's /tmp and
/etc/passwd are never touched. Host paths the services need (the interpreter, the virtualenv, the
checkout, the test's directory) are bound back at the same place on top of the tmpfs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")
TARGET = "asyncphp-test.target"
EXTRA_MASKS = (
    "systemd-tmpfiles-clean.timer",
    "systemd-remount-fs.service",
    "systemd-udevd.service",
    "ldconfig.service",
)


def unavailable() -> str | None:
    """Why this machine cannot boot a namespaced systemd, or None if it can."""
    if os.geteuid() != 0:
        return "booting systemd in a namespace needs root"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing"
    return None


def _masks() -> list[str]:
    names = set(EXTRA_MASKS)
    for wants in ("sysinit.target.wants", "local-fs.target.wants"):
        folder = Path("/lib/systemd/system") / wants
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir())
    names.discard("systemd-journald.service")
    return sorted(names)


def _boot_script(units: Mapping[str, str], expose: Iterable[Path], workdir: Path) -> str:
    # Paths under /tmp and /root disappear under the tmpfs below; bind them back from a stash.
    rebinds = []
    for path in sorted({p.resolve() for p in expose}):
        for top in ("/tmp", "/root"):
            if str(path).startswith(top + "/"):
                stash = f"/run/host{top}{str(path)[len(top) :]}"
                rebinds.append(f"mkdir -p '{path}' && mount --bind '{stash}' '{path}'")
    unit_writes = []
    for name, text in units.items():
        target = workdir / "units" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        unit_writes.append(f"mkdir -p \"$(dirname '/etc/systemd/system/{name}')\"")
        unit_writes.append(f"cp '{target}' '/etc/systemd/system/{name}'")
    masks = [f"ln -s /dev/null '/etc/systemd/system/{name}'" for name in _masks()]
    return "\n".join(
        [
            "set -eu",
            "mount --make-rprivate /",
            "mount -t tmpfs -o mode=755 tmpfs /run",
            "mkdir -p /run/host/tmp /run/host/root",
            "mount --bind /tmp /run/host/tmp",
            "mount --bind /root /run/host/root",
            "mount -t tmpfs -o mode=1777 tmpfs /tmp",
            "mount -t tmpfs -o mode=755 tmpfs /root",
            *rebinds,
            # What units write under /var (PrivateTmp's /var/tmp/systemd-private-*, DynamicUser's
            # /var/lib/private and the StateDirectory= link beside it) lands in the namespace's
            # tmpfs: /var/tmp is one, and /var/lib, /var/cache and /var/log are overlays on one.
            "mount -t tmpfs -o mode=1777 tmpfs /var/tmp",
            "for d in lib cache log; do",
            "    mkdir -p /run/var/$d/upper /run/var/$d/work",
            "    layers=lowerdir=/var/$d,upperdir=/run/var/$d/upper,workdir=/run/var/$d/work",
            "    mount -t overlay overlay -o $layers /var/$d",
            "done",
            "mkdir -p /var/log/journal",
            "for d in /var/log/journal /var/lib/systemd /etc/systemd/system; do",
            "    mount -t tmpfs tmpfs $d",
            "done",
            *masks,
            *unit_writes,
            f"exec {SYSTEMD} --system --unit={TARGET}",
        ]
    )


class NamespacedSystemd:
    """systemd as PID 1 of private PID/mount/UTS/IPC namespaces; stopped with SIGKILL by its PID."""

    def __init__(self, workdir: Path, units: Mapping[str, str], expose: Iterable[Path]) -> None:
        all_units = {
            TARGET: "[Unit]\nDescription=asyncphp test target\nWants=systemd-journald.service\n",
            **units,
        }
        script = workdir / "boot.sh"
        script.write_text(_boot_script(all_units, expose, workdir))
        self._log = (workdir / "systemd.out").open("wb")
        self._unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--mount-proc", "sh", str(script)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._find_systemd()

    def _find_systemd(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        while time.monotonic() < deadline:
            for pid in children.read_text().split() if children.exists() else []:
                if Path(f"/proc/{pid}/exe").resolve() == SYSTEMD.resolve():
                    return int(pid)
            if self._unshare.poll() is not None:
                break
            time.sleep(0.05)  # poll
        self.stop()
        raise RuntimeError(f"systemd did not boot in its namespace: {Path(self._log.name).read_text()}")

    def run(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A command inside the namespaces (systemctl, journalctl, cat …)."""
        command = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", *args]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)

    def wait_running(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)  # poll
        raise RuntimeError(f"systemd in the namespace is {state!r} after {timeout:.0f} s")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def stop(self) -> None:
        # PID 1 of a namespace ignores SIGTERM; SIGKILL from outside ends it and its mounts.
        if self._unshare.poll() is None:
            for pid in (
                Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children").read_text().split()
            ):
                os.kill(int(pid), signal.SIGKILL)
            try:
                self._unshare.wait(10)
            except subprocess.TimeoutExpired:
                self._unshare.kill()
                self._unshare.wait()
        self._log.close()
