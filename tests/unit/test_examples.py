"""The shipped example settings file is what the daemon accepts and what its defaults are."""

from __future__ import annotations

from pathlib import Path

from asyncphp import settings
from tests.conftest import ROOT


def test_example_daemon_toml_loads_to_the_defaults() -> None:
    example = ROOT / "systemd" / "daemon.toml"
    loaded = settings.load(["--config", str(example)], {}, default_config=Path("/nonexistent"))
    assert loaded == settings.Settings(consumer=loaded.consumer)
