"""The manual pages in man/ are what the settings and the parsers make, cover every setting, flag and
subcommand, and read without a warning from man."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

import pytest

from asyncphp.cli import COMMANDS, subcommands
from asyncphp.cli import parser as command_tree
from asyncphp.pages import manual
from asyncphp.settings import SETTINGS
from tests.conftest import ROOT

PAGES = manual.pages()


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_committed_page_is_the_one_made_from_the_code(name: str) -> None:
    committed = ROOT / "man" / name
    assert committed.exists() and committed.read_text() == PAGES[name], (
        f"man/{name} is out of date: run python -m asyncphp.pages.manual"
    )


def _plain(text: str) -> str:
    return text.replace("\\-", "-").replace("\\e", "\\")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_in_the_daemon_page_and_the_file_page(setting: manual.Setting) -> None:
    daemon, toml = _plain(PAGES["asyncphp-daemon.8"]), _plain(PAGES["asyncphp-daemon.toml.5"])
    assert setting.flag in daemon
    assert f"\\fB{setting.name}\\fR" in toml
    assert setting.flag in toml and setting.env in toml


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _flags(sub)
        found |= {flag for flag in action.option_strings if flag not in ("-h", "--help")}
    return found


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_subcommand_and_its_own_flags_are_in_the_commands_page(command: manual.Command) -> None:
    page = _plain(PAGES["asyncphp.1"])
    assert f'.SH "asyncphp {command.name.upper()}"' in page
    settings_flags = {s.flag for s in SETTINGS} | {"--config", "--version"}
    parser = subcommands(command_tree())[command.name]
    own = _flags(parser) - (settings_flags if command.takes_settings else set())
    assert [flag for flag in sorted(own) if f"\\fB{flag}" not in page] == []


@pytest.mark.skipif(
    shutil.which("man") is None and not os.environ.get("CI"), reason="man-db is not installed"
)
@pytest.mark.parametrize("name", sorted(PAGES))
def test_man_reads_the_page_without_a_warning(name: str) -> None:
    done = subprocess.run(
        ["man", "--warnings", "-l", str(ROOT / "man" / name)],
        capture_output=True, text=True, env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "NAME" in done.stdout
