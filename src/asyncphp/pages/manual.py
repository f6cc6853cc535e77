"""The manual pages, made from the settings' one declaration and the command tree's parsers.

``python -m asyncphp.pages.manual`` writes them into ``man/``; a unit test holds the committed pages
to what this module makes, so a setting, a flag or a subcommand cannot be added without its page
(the way gunicorn's settings page is made from its ``config.py``); ``python -m asyncphp.pages.docs``
writes them too, with the settings tables of README.md and docs/. The pages are roff (``man 7
man``), checked with ``man --warnings`` and shipped in the ``.deb``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from asyncphp.cli import COMMANDS, Command, subcommands
from asyncphp.cli import parser as command_tree
from asyncphp.pages.markdown import plain
from asyncphp.settings import DEFAULT_CONFIG, RELOADABLE, SETTINGS, Setting
from asyncphp.settings import parser as settings_parser
from asyncphp.version import __version__

__all__ = ["Command", "Setting", "main", "pages"]

SOURCE = f"asyncphp {__version__}"
MAN = Path(__file__).resolve().parents[3] / "man"


def roff(text: str) -> str:
    """Text as roff reads it literally: backslashes and hyphens escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.splitlines())


def _header(name: str, section: int, title: str, summary: str) -> list[str]:
    manual = {1: "User Commands", 5: "File Formats", 8: "System Administration"}[section]
    return [
        '.\\" Made by python -m asyncphp.pages.manual from the settings and the parsers: edit those.',
        f'.TH {name.upper()} {section} "" "{SOURCE}" "{manual}"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(summary)}",
        f'.\\" {title}',
    ]


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is None and action.choices is not None:
        return " {" + ",".join(str(choice) for choice in action.choices) + "}"
    shown = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    return " " + (shown if isinstance(shown, str) else " ".join(shown))


def _help(action: argparse.Action, prog: str) -> str:
    return argparse.HelpFormatter(prog)._expand_help(action) if action.help else ""


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    """A tagged paragraph for each argument, and each subcommand's after it."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                yield f".SS {roff(name)}"
                if helps.get(name):
                    yield roff(str(helps[name]))
                yield from _options(sub)
            continue
        names = ", ".join(action.option_strings) or _metavar(action).strip()
        tag = names + (_metavar(action) if action.option_strings else "")
        yield ".TP"
        yield f"\\fB{roff(tag)}\\fR"
        yield roff(_help(action, parser.prog)) or "\\&"


def _setting(s: Setting) -> list[str]:
    return [
        ".TP",
        f"\\fB{roff(s.name)}\\fR (\\fB{roff(s.flag)}\\fR, \\fB{roff(s.env)}\\fR)",
        roff(plain(s.doc)) + ".",
        roff(f"Default: {s.shown}." + (" Applied by SIGHUP." if s.live else " A restart applies it.")),
    ]


def daemon_page() -> str:
    parser = settings_parser()
    live = ", ".join(sorted(RELOADABLE))
    lines = _header("asyncphp-daemon", 8, "the daemon", "hand jobs from Redis to a php-fpm pool")
    lines += [
        ".SH SYNOPSIS",
        "\\fBasyncphp\\-daemon\\fR [\\fIOPTION\\fR]...",
        ".br",
        "\\fBasyncphp daemon\\fR [\\fIOPTION\\fR]...",
        ".SH DESCRIPTION",
        roff(str(parser.description)),
        "Each JSON message read from a channel, or each entry read from a stream through a consumer group "
        "(the durable mode), becomes one FastCGI request to the pool's worker script, which runs it in a "
        "fresh PHP request.",
        ".PP",
        roff(
            "Every setting comes from the TOML file (asyncphp-daemon.toml(5)), from an ASYNCPHP_* variable, "
            "or from a flag; a flag wins over the environment, the environment over the file."
        ),
        ".SH OPTIONS",
        *_options(parser),
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBASYNCPHP_CONFIG\\fR",
        "The TOML file, when \\fB\\-\\-config\\fR is not given.",
        ".TP",
        "\\fBASYNCPHP_\\fR\\fINAME\\fR",
        roff(
            "Each setting, named after its flag (ASYNCPHP_MAX_IN_FLIGHT for --max-in-flight); "
            "a repeatable one comma-separated."
        ),
        ".TP",
        "\\fBCREDENTIALS_DIRECTORY\\fR",
        roff("systemd's LoadCredential=: redis-password in it is the Redis password when no other is given."),
        ".TP",
        "\\fBSTATE_DIRECTORY\\fR",
        roff("systemd's StateDirectory=: the state_dir when none is given."),
        ".TP",
        "\\fBNOTIFY_SOCKET\\fR",
        roff("systemd's notify socket: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 are sent to it."),
        ".SH SIGNALS",
        ".TP",
        "\\fBSIGTERM\\fR, \\fBSIGINT\\fR",
        roff(
            "Stop reading, let queued and running jobs finish and every acknowledgement be confirmed for up "
            "to drain_timeout, then exit 0 with a summary line. A second signal stops at once."
        ),
        ".TP",
        "\\fBSIGHUP\\fR",
        roff(f"Read the file, the environment and the flags again and apply the live settings: {live}."),
        ".SH FILES",
        ".TP",
        f"\\fI{roff(str(DEFAULT_CONFIG))}\\fR",
        "The settings, when no other file is named.",
        ".SH EXIT STATUS",
        "0 after a stop by signal; 2 for invalid settings; 1 for a failure it cannot go on from.",
        ".SH SEE ALSO",
        "\\fBasyncphp\\fR(1), \\fBasyncphp\\-daemon.toml\\fR(5), \\fBphp\\-fpm\\fR(8), "
        "\\fBredis\\-server\\fR(1)",
    ]
    return "\n".join(lines) + "\n"


def settings_page() -> str:
    lines = _header("asyncphp-daemon.toml", 5, "the settings file", "the settings of asyncphp-daemon")
    lines += [
        ".SH SYNOPSIS",
        f"\\fI{roff(str(DEFAULT_CONFIG))}\\fR",
        ".SH DESCRIPTION",
        roff(
            "A TOML file of top-level keys, one per setting; a key the daemon does not know is an error. "
            "The same settings can be given as ASYNCPHP_* variables and as flags (asyncphp-daemon(8)), "
            "which win over the file. A repeatable setting is an array of strings in the file."
        ),
        ".SH SETTINGS",
    ]
    for s in SETTINGS:
        lines += _setting(s)
    lines += [
        ".SH EXAMPLE",
        ".nf",
        'redis_url = "redis://127.0.0.1:6379/0"',
        'streams = ["mail", "reports"]',
        'fpm_socket = "/run/php/asyncphp\\-commands.sock"',
        'worker_script = "/srv/app/worker.php"',
        "max_in_flight = 5",
        ".fi",
        ".SH SEE ALSO",
        "\\fBasyncphp\\-daemon\\fR(8), \\fBasyncphp\\fR(1)",
    ]
    return "\n".join(lines) + "\n"


def commands_page() -> str:
    lines = _header("asyncphp", 1, "the commands", "publish jobs for asyncphp-daemon and operate it")
    lines += [
        ".SH SYNOPSIS",
        "\\fBasyncphp\\fR \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".br",
        "\\fBasyncphp\\-publish\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        roff(
            "One command for the daemon, publishing and the operator's tools. asyncphp-publish is "
            "asyncphp publish."
        ),
        ".SH COMMANDS",
    ]
    for command in COMMANDS:
        lines += [".TP", f"\\fB{roff(command.name)}\\fR", roff(command.summary)]
    parsers = subcommands(command_tree())
    for command in COMMANDS:
        parser = parsers[command.name]
        lines += [f'.SH "asyncphp {roff(command.name).upper()}"']
        if parser.description:
            lines.append(roff(parser.description))
        if command.takes_settings:
            lines += [".PP", roff("It takes every setting of the daemon as a flag: see asyncphp-daemon(8).")]
        own = argparse.ArgumentParser(add_help=False)
        flags = {s.flag for s in SETTINGS} | {"--config", "--version"}
        for action in parser._actions:
            if not (command.takes_settings and set(action.option_strings) & flags):
                own._add_action(action)
        lines += list(_options(own))
        if parser.epilog and parser.formatter_class is argparse.RawDescriptionHelpFormatter:
            lines += [".PP", ".nf", roff(parser.epilog), ".fi"]
        elif parser.epilog:
            lines += [".PP", roff(parser.epilog)]
    lines += [
        ".SH SEE ALSO",
        "\\fBasyncphp\\-daemon\\fR(8), \\fBasyncphp\\-daemon.toml\\fR(5)",
    ]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """Each page's file name and text."""
    return {
        "asyncphp.1": commands_page(),
        "asyncphp-daemon.8": daemon_page(),
        "asyncphp-daemon.toml.5": settings_page(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    out = Path(argv[0]) if argv else MAN
    out.mkdir(exist_ok=True)
    for name, text in pages().items():
        (out / name).write_text(text)
        print(f"manual: {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
