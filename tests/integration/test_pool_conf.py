"""The shipped pool file is valid php-fpm configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path

from asyncphp.dev.sandbox import find_php_fpm, render_pool
from tests.conftest import POOL_CONF


def test_shipped_pool_passes_php_fpm_t(tmp_path: Path) -> None:
    # Only the access log moves, so that the lint does not create a file in /var/log.
    conf = tmp_path / "commands.conf"
    conf.write_text(render_pool(POOL_CONF, {"access.log": str(tmp_path / "access.log")}))
    done = subprocess.run([find_php_fpm(), "-t", "-y", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_shipped_pool_keeps_the_original_shape() -> None:
    settings = dict(
        line.split(" = ", 1)
        for line in POOL_CONF.read_text().splitlines()
        if " = " in line and not line.startswith(";")
    )
    assert settings["pm"] == "ondemand"
    assert settings["pm.max_children"] == "5"
    assert settings["pm.process_idle_timeout"] == "10s"
    assert settings["listen"].startswith("/run/php/")
    assert settings["listen.mode"] == "0660"
    assert "request_terminate_timeout" in settings and settings["catch_workers_output"] == "yes"
