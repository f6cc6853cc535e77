"""The shipped example settings file and the settings tables (docs/settings.md, every one; the README, some)
match the settings' one definition."""

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
    """The rows of the table of every setting in docs/settings.md, header and rule excluded."""
    page = (ROOT / "docs" / "settings.md").read_text()
    section = page.split("<!-- settings: all -->\n", 1)[1].split("<!-- settings: end -->", 1)[0]
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
def test_the_settings_table_has_every_setting(setting: settings.Setting) -> None:
    rows = [row for row in _settings_table() if row.startswith(f"| `{setting.name}` |")]
    assert len(rows) == 1, f"docs/settings.md's table needs one row for {setting.name}"
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert f"`{setting.flag}`" in cells[1]
    assert f"`{setting.env}`" in cells[1]
    assert cells[-1] == ("yes" if setting.live else "no"), f"{setting.name}: live on SIGHUP"


def test_the_settings_table_has_no_setting_that_does_not_exist() -> None:
    names = {s.name for s in settings.SETTINGS}
    listed = [row.split("`")[1] for row in _settings_table()]
    assert [name for name in listed if name not in names] == []


def test_the_readme_shows_only_settings_that_exist_and_links_every_one() -> None:
    # The README's tables are a newcomer's few; the rest are a link away. That no table of the README or
    # docs/ is cut by a blank line is tests/unit/test_docs.py's.
    readme = (ROOT / "README.md").read_text()
    names = {s.name for s in settings.SETTINGS}
    tables = [part.split("<!-- settings: end -->", 1)[0] for part in readme.split("<!-- settings: ")[1:]]
    shown = [row.split("`")[1] for table in tables for row in table.splitlines() if row.startswith("| `")]
    assert set(shown) & names and [name for name in shown if name not in names] == []
    assert "(docs/settings.md)" in readme
