from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import asyncphp

ROOT = Path(__file__).resolve().parent.parent
POOL_CONF = ROOT / "fpm-pool" / "commands.conf"
WORKER = ROOT / "fpm-pool" / "worker.php"
PHP_DIR = ROOT / "tests" / "php"


@pytest.fixture(scope="session")
def php() -> str:
    """The PHP CLI; the test command installs it, so its absence is a failure, not a skip."""
    found = shutil.which("php")
    if found is None:
        pytest.fail("php (php-cli) is not installed: run scripts/test, which installs it")
    return found


def _compiled() -> list[Path]:
    """The mypyc-compiled modules asyncphp loads (none for the pure-Python build)."""
    return sorted(Path(asyncphp.__file__).parent.rglob("*.so"))


def pytest_report_header() -> str:
    compiled = _compiled()
    build = f"compiled ({len(compiled)} modules)" if compiled else "pure Python"
    return f"asyncphp: {build}, from {Path(asyncphp.__file__).parent}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # In a checkout installed with pip install -e, a compiled module sits beside its .py and shadows
    # it: an edit since the build would go untested.
    if ROOT / "src" not in Path(asyncphp.__file__).parents:
        return
    stale = []
    for so in _compiled():
        py = so.with_name(so.name.split(".")[0] + ".py")  # pool.cpython-311-x86_64-linux-gnu.so → pool.py
        if py.exists() and py.stat().st_mtime > so.stat().st_mtime:
            stale.append(py.name)
    if stale:
        raise pytest.UsageError(
            f"compiled modules older than their source: {', '.join(stale)}; rebuild them with scripts/setup "
            "(ASYNCPHP_COMPILE=0 for plain Python)"
        )


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 in ``directory`` (made), for TLS servers."""
    directory.mkdir()
    key, cert = directory / "redis.key", directory / "redis.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert
