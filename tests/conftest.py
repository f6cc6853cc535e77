from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
