"""The shipped example settings file and the README's settings table match the settings' one definition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncphp import settings
from tests.conftest import ROOT

EXAMPLE = ROOT / "systemd" / "daemon.toml"


def _load(argv: list[str]) -> settings.Settings:
    return settings.load(argv, {}, default_config=Path("/nonexistent"))


def _settings_table() -> list[str]:
    """The rows of the table in the README's "The daemon" section, header and rule excluded."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## The daemon\n", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_example_daemon_toml_loads_to_the_defaults() -> None:
    loaded = _load(["--config", str(EXAMPLE)])
    assert loaded == settings.Settings(consumer=loaded.consumer)


def test_example_daemon_toml_with_a_stream_is_the_durable_mode_alone() -> None:
    # A channel set in the file would add pub/sub back to what --stream alone means.
    loaded = _load(["--config", str(EXAMPLE), "--stream", "commands"])
    assert loaded.channels == ()
    assert loaded.streams == ("commands",)


@pytest.mark.parametrize("setting", settings.SETTINGS, ids=lambda s: s.name)
def test_example_daemon_toml_mentions_every_setting(setting: settings.Setting) -> None:
    text = EXAMPLE.read_text()
    assert re.search(rf"^(# )?{setting.name} = ", text, re.MULTILINE), f"{setting.name} is not in {EXAMPLE}"


@pytest.mark.parametrize("setting", settings.SETTINGS, ids=lambda s: s.name)
def test_readme_table_has_every_setting(setting: settings.Setting) -> None:
    rows = [row for row in _settings_table() if row.startswith(f"| `{setting.name}` |")]
    assert len(rows) == 1, f"README's settings table needs one row for {setting.name}"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert f"`{setting.flag}`" in cells[1]
    assert f"`{setting.env}`" in cells[1]
    assert cells[-1] == ("yes" if setting.live else "no"), f"{setting.name}: live on SIGHUP"


def test_readme_table_has_no_setting_that_does_not_exist() -> None:
    names = {s.name for s in settings.SETTINGS}
    listed = [row.split("`")[1] for row in _settings_table()]
    assert [name for name in listed if name not in names] == []


def test_no_table_in_the_readme_is_cut_by_a_blank_line() -> None:
    # A blank line between two rows ends the table: on GitHub the rest of it rendered as raw pipes
    # (the settings table lost 29 of its rows after max_attempts).
    lines = (ROOT / "README.md").read_text().splitlines()
    cuts = [n + 1 for n in range(1, len(lines) - 1) if not lines[n].strip() and lines[n - 1].startswith("|")
            and lines[n + 1].startswith("| `")]  # fmt: skip
    assert cuts == [], f"README.md: a blank line inside a table at line(s) {cuts}"
