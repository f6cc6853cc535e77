"""The Debian package on a brand-new Debian 12: built by scripts/build-deb, installed into a fresh
debootstrap root booted with systemd-nspawn (a real systemd, Redis and php-fpm from Debian), one job
run, an upgrade that keeps an edited conffile, and a purge.

The container's root lives in a temp dir; with systemd-nspawn it has its own mount, PID, UTS, IPC and
network namespaces, so its systemd, its Redis (on port 6379) and its php-fpm touch nothing on this
machine. Its packages come from debootstrap, so it needs no network of its own: the package is
installed, upgraded and purged with dpkg.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import wait_for

MIRROR = "http://deb.debian.org/debian"
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
VERSION = re.search(r'__version__ = "(.+?)"', (ROOT / "src/asyncphp/version.py").read_text())
UNIT = "asyncphp-daemon.service"


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    return ""


def _nested() -> bool:
    """This runs in a container itself (systemd-nspawn and others say so in PID 1's environment)."""
    try:
        return b"\0container=" in b"\0" + Path("/proc/1/environ").read_bytes()
    except OSError:
        return False


pytestmark = pytest.mark.skipif(bool(_why_not()) and not os.environ.get("CI"), reason=_why_not())


def _deb(revision: int) -> Path:
    """scripts/build-deb's package of this checkout, numbered ``revision``."""
    assert VERSION
    done = subprocess.run(
        [ROOT / "scripts/build-deb"], env={**os.environ, "ASYNCPHP_DEB_REVISION": str(revision)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "lintian clean" in done.stdout
    return ROOT / "dist" / f"asyncphp_{VERSION.group(1)}-{revision}_{ARCH}.deb"


class Container:
    """A Debian 12 root booted with systemd-nspawn; commands run in it with nsenter."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self._out = log.open("wb")
        # Inside a container, nspawn's legacy cgroup set-up finds no "systemd" hierarchy of its own
        # ("Failed to attach … to compat systemd cgroup"): the unified one, then.
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"} if _nested() else None
        self._nspawn = subprocess.Popen(
            ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--private-network", "-b", "-D", root],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.pid = 0
        try:
            self._boot(log)
        except BaseException:
            self.stop()
            raise

    def _boot(self, log: Path) -> None:
        ours = os.readlink("/proc/self/ns/pid")

        def leader() -> int:
            """The container's PID 1: nspawn's child in a PID namespace of its own (not the
            short-lived helper nspawn forks first)."""
            if self._nspawn.poll() is not None:
                self._out.flush()
                said = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"systemd-nspawn exited with {self._nspawn.returncode}: {said}")
            children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children").read_text().split()
            for child in children:
                try:
                    if os.readlink(f"/proc/{child}/ns/pid") != ours:
                        return int(child)
                except OSError:
                    continue  # gone meanwhile
            return 0

        found = wait_for(leader, timeout=30, what="the container's systemd")
        assert isinstance(found, int)
        self.pid = found

        def booted() -> bool:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_for(booted, timeout=60, what="the container's systemd to finish booting")

    def sh(self, script: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-p", "-n", "--", "env", "-i",
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def stop(self) -> None:
        if self._nspawn.poll() is None:
            self._nspawn.terminate()  # nspawn asks the container's systemd to power off
            try:
                self._nspawn.wait(30)
            except subprocess.TimeoutExpired:
                if self.pid:
                    os.kill(self.pid, 9)  # the container's PID 1: its whole PID namespace ends with it
                self._nspawn.kill()
                self._nspawn.wait()
        self._out.close()


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Revision 1, revision 1 built again (kept aside), and revision 2."""
    again = tmp_path_factory.mktemp("again")
    first = _deb(1)
    shutil.copy(first, again / first.name)
    return again / first.name, _deb(1), _deb(2)


@pytest.mark.timeout(1800)  # three package builds (each compiles the wheel): minutes
def test_two_builds_of_one_commit_give_the_same_deb(debs: tuple[Path, Path, Path]) -> None:
    first, again, _ = debs
    digests = [hashlib.sha256(deb.read_bytes()).hexdigest() for deb in (first, again)]
    assert digests[0] == digests[1], f"{first.name}: {digests}"
    # The manual pages are in it (lintian, run by scripts/build-deb, checks them).
    listing = subprocess.run(["dpkg-deb", "-c", first], capture_output=True, text=True, check=True).stdout
    for page in ("man1/asyncphp.1.gz", "man1/asyncphp-publish.1.gz", "man8/asyncphp-daemon.8.gz",
                 "man5/asyncphp-daemon.toml.5.gz"):  # fmt: skip
        assert f"./usr/share/man/{page}" in listing


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    subprocess.run([ROOT / "scripts/apt-install", "debootstrap", "systemd-container"], check=True)
    # Not under /tmp, which may be mounted nodev (a container's is), where debootstrap refuses.
    root = Path(tempfile.mkdtemp(prefix="asyncphp-deb-root.", dir="/var/tmp"))
    root.chmod(0o755)  # it is the container's /: mkdtemp's 0700 kept redis (and journald's users) out
    # What the package depends on and recommends, so that the container needs no network: dpkg
    # then installs it as on a server that has php-fpm and Redis. systemd-sysv gives /sbin/init,
    # without which invoke-rc.d starts no service at all.
    include = "--include=systemd,systemd-sysv,dbus,python3,php8.2-fpm,redis-server"
    command = ["debootstrap", "--variant=minbase", include, "bookworm", str(root), MIRROR]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        # The booted container's D-Bus may never report ready (seen inside scripts/fresh-check's
        # container, and on this machine after many container runs), and logind waits for it: the boot
        # stays "starting". The package needs neither; systemctl talks to systemd without them.
        for unit in ("dbus.service", "dbus.socket", "systemd-logind.service"):
            (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
        box = Container(root, tmp_path / "nspawn.log")
        try:
            yield box
        finally:
            box.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)  # 300 MB, which pytest would keep for three runs


@pytest.mark.timeout(1800)  # a debootstrap and apt in the container: minutes
def test_install_run_upgrade_keeping_an_edited_conffile_and_purge(
    debs: tuple[Path, Path, Path], container: Container
) -> None:
    first, _, second = debs
    print(f"\n{first.name}: {first.stat().st_size / 2**20:.1f} MiB")
    for deb in (first, second):
        shutil.copy(
            deb, container.root / "srv" / deb.name
        )  # not /tmp: the booted system mounts a tmpfs there

    started = time.monotonic()
    container.sh(f"dpkg -i /srv/{first.name}")
    # Enabled, not started: Redis may not be there yet (here it is: recommended, and installed).
    assert container.sh(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    assert container.sh(f"systemctl is-active {UNIT}", check=False).stdout.strip() == "inactive"
    servers = container.sh("systemctl is-active php8.2-fpm redis-server", check=False).stdout.split()
    why = container.sh("journalctl -b --no-pager -n 30 -u php8.2-fpm -u redis-server", check=False).stdout
    assert servers == ["active", "active"], why
    container.sh(f"systemctl start {UNIT} && asyncphp-publish timestamp=from-the-deb")
    worker_log = container.root / "var/log/asyncphp/worker.log"
    wait_for(lambda: worker_log.exists() and "from-the-deb" in worker_log.read_text(), what="the first job")
    print(f"dpkg -i of the .deb to the first job run: {time.monotonic() - started:.1f} s")
    check = container.sh("asyncphp check")
    assert "all checks passed" in check.stdout + check.stderr

    # An operator's edit survives the upgrade (a conffile: kept, and never a question, with
    # --force-confold), and the running daemon is restarted onto the new code.
    settings = container.root / "etc/asyncphp/daemon.toml"
    settings.write_text(settings.read_text().replace("max_in_flight = 5", "max_in_flight = 7"))
    pid = container.sh(f"systemctl show -p MainPID --value {UNIT}").stdout.strip()
    container.sh(f"dpkg -i --force-confold /srv/{second.name}")
    assert container.sh("dpkg-query -W -f '${Version}' asyncphp").stdout.endswith("-2")
    assert "max_in_flight = 7" in settings.read_text()
    after = container.sh(f"systemctl show -p MainPID,ActiveState --value {UNIT}").stdout.split()
    assert after[1] == "active" and after[0] != pid, after
    container.sh("asyncphp-publish timestamp=after-the-upgrade")
    wait_for(lambda: "after-the-upgrade" in worker_log.read_text(), what="a job after the upgrade")

    container.sh("dpkg --purge asyncphp")
    assert container.sh(f"systemctl is-active {UNIT}", check=False).stdout.strip() == "inactive"
    gone = ["etc/asyncphp", "etc/php/8.2/fpm/pool.d/commands.conf", "var/log/asyncphp", "opt/venvs/asyncphp",
            "lib/systemd/system/asyncphp-daemon.service", "usr/bin/asyncphp", "var/lib/asyncphp",
            "var/log/asyncphp-commands.access.log", "etc/logrotate.d/asyncphp"]  # fmt: skip
    assert [path for path in gone if os.path.lexists(container.root / path)] == []
