"""`asyncphp` is one command tree: a root parser with each command under it, the daemon's settings
flags added to every command that reads them from the settings' one declaration."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from asyncphp import cli, settings
from asyncphp.settings import from_arguments, load

TREE = cli.parser()
PARSERS = cli.subcommands(TREE)


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple[str, type[argparse.Action]]]:
    """Each flag of ``parser``: where it is stored and how."""
    return {
        flag: (action.dest, type(action))
        for action in parser._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help")
    }


def test_every_command_is_a_subparser_of_the_one_root_and_nothing_else_is() -> None:
    assert list(PARSERS) == [command.name for command in cli.COMMANDS]
    for name, parser in PARSERS.items():
        assert parser.prog == f"asyncphp {name}"


@pytest.mark.parametrize("command", cli.COMMANDS, ids=lambda c: c.name)
def test_help_of_every_command_comes_from_the_tree(
    command: cli.Command, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command.name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: asyncphp {command.name} ")
    assert PARSERS[command.name].description and PARSERS[command.name].description in " ".join(out.split())


@pytest.mark.parametrize("command", [c for c in cli.COMMANDS if c.takes_settings], ids=lambda c: c.name)
def test_a_command_that_takes_the_settings_takes_them_as_the_daemon_does(command: cli.Command) -> None:
    daemon = _options(settings.parser())
    assert {flag: daemon[flag] for flag in _options(PARSERS[command.name]) if flag in daemon} == daemon


@pytest.mark.parametrize("name", ["publish", "dead", "delayed"])
def test_the_commands_that_take_some_settings_take_those_flags_as_the_daemon_does(name: str) -> None:
    daemon, own = _options(settings.parser()), _options(PARSERS[name])
    assert own["--config"] == daemon["--config"] and own["--redis-url"] == daemon["--redis-url"]
    # Their --stream is the one stream they work on, not the streams a daemon reads.
    assert own["--stream"] == ("stream", argparse._StoreAction) != daemon["--stream"]


def test_a_settings_flag_is_read_alike_by_two_commands(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text('redis_url = "redis://10.0.0.1:6379/0"\nstreams = ["jobs", "mail"]\n')
    url = "redis://10.0.0.2:6380/3"
    status = TREE.parse_args(["status", "--config", str(config), "--redis-url", url, "--json"])
    dead = TREE.parse_args(["dead", "--config", str(config), "--redis-url", url, "list"])
    assert (status.config, status.redis_url) == (dead.config, dead.redis_url) == (config, url)
    absent = tmp_path / "absent.toml"
    read = [from_arguments(args, {}, absent) for args in (status, dead)]
    assert read[0] == read[1] == load(["--config", str(config), "--redis-url", url], {}, absent)
    assert read[0].redis_url == url and read[0].streams == ("jobs", "mail"), "flag over file"


def test_the_environment_is_read_alike_by_two_commands(tmp_path: Path) -> None:
    env = {"ASYNCPHP_REDIS_URL": "redis://10.0.0.3:6379/0", "ASYNCPHP_STREAM": "jobs"}
    absent = tmp_path / "absent.toml"
    check = from_arguments(TREE.parse_args(["check"]), env, absent)
    delayed = from_arguments(TREE.parse_args(["delayed", "list"]), env, absent)
    assert check == delayed and check.redis_url == "redis://10.0.0.3:6379/0"


def test_the_daemon_command_hands_the_daemon_what_the_tree_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncphp.loop.daemon

    given: list[list[str]] = []

    def daemon(argv: Sequence[str] | None = None) -> int:
        given.append(list(argv or ()))
        return 7

    monkeypatch.setattr(asyncphp.loop.daemon, "main", daemon)
    argv = ["--config", "/dev/null", "--stream", "a", "--stream", "b", "--fpm-status-path", "",
            "--redis-url", "redis://127.0.0.1:1/0", "--consumer=-dash-first"]  # fmt: skip
    assert cli.main(["daemon", *argv]) == 7
    [flags] = given
    env = {"ASYNCPHP_CONFIG": "/dev/null"}
    assert load(flags, env) == load(argv, env)
    assert load(flags, env).consumer == "-dash-first" and load(flags, env).fpm_status_path == ""


def test_no_command_and_an_unknown_one_print_the_usage_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert capsys.readouterr().out == cli.usage()
    assert cli.main(["--help"]) == 0
    assert capsys.readouterr().out == cli.usage()
    assert cli.main(["nonsense"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"asyncphp: unknown command 'nonsense'\n\n{cli.usage()}" and captured.out == ""


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["dead", "list", "--bogus"], "asyncphp dead: error: unrecognized arguments: --bogus"),
        (["dead", "replay"], "asyncphp dead: error: replay: give dead letter ids, or --all"),
        (["status", "--bogus"], "asyncphp status: error: unrecognized arguments: --bogus"),
        (["publish", "--partition-key", "k"], "asyncphp publish: error: --partition-key chooses one"),
        (["delayed", "list", "--count", "0"], "asyncphp delayed list: error: argument --count"),
    ],
)
def test_a_bad_command_line_is_refused_by_the_command_s_own_parser(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCPHP_CONFIG", os.devnull)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: asyncphp {argv[0]} ") and said in err


def test_an_empty_config_flag_names_no_file(tmp_path: Path) -> None:
    """`--config "$CFG"` with CFG unset: the environment's file, as if no flag were given."""
    config = tmp_path / "daemon.toml"
    config.write_text('streams = ["from-env"]\n')
    env = {"ASYNCPHP_CONFIG": str(config)}
    for argv in (["status", "--config", ""], ["dead", "--config", "", "--stream", "jobs", "list"]):
        args = TREE.parse_args(argv)
        assert args.config is None
        assert from_arguments(args, env, tmp_path / "absent.toml").streams == ("from-env",)
