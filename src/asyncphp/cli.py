"""``asyncphp``: one command for the daemon, publishing and the operator's tools."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncphp import redisurl, settings
from asyncphp.logfmt import preview
from asyncphp.settings import SettingsError, from_arguments
from asyncphp.version import __version__


@dataclass(frozen=True)
class Command:
    """A subcommand of `asyncphp`: what it is for, its command line, and what runs it.

    ``define`` declares the command's own arguments (and its description) on its parser in the
    tree (`parser`); a command that ``takes_settings`` also takes every daemon setting as a flag
    (asyncphp-daemon(8)), added from the settings' one declaration. ``run`` gets what the tree
    parsed, and may raise argparse.ArgumentError for a command line argparse alone cannot refuse.
    """

    name: str
    summary: str
    define: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    takes_settings: bool = False


def _lazy(module: str, name: str) -> Callable[[Any], Any]:
    """``module.name``, imported when first called: each command loads only what it runs."""

    def call(arg: Any) -> Any:
        return getattr(importlib.import_module(module), name)(arg)

    return call


def _define_daemon(parser: argparse.ArgumentParser) -> None:
    parser.description, parser.epilog = settings.DAEMON_DESCRIPTION, settings.DAEMON_EPILOG


def _daemon(args: argparse.Namespace) -> int:
    from asyncphp.loop.daemon import main as daemon_main

    # The daemon parses its flags again at each SIGHUP, so it is given them, not the settings.
    return daemon_main(settings.command_line(args))


def _define_check(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Verify the settings, Redis (its version, the rights the daemon needs), the pool and the worker, "
        "one line each, like nginx -t. Exit status 0 when every check passed, 1 otherwise."
    )


def _define_dev(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "A private Redis and php-fpm pool in a temp dir, the daemon in the foreground with the flags "
        "given; Ctrl-C stops all three."
    )


def _dev(args: argparse.Namespace) -> int:
    from asyncphp.dev.sandbox import dev
    from asyncphp.files import POOL, WORKER, shipped

    return dev(shipped(POOL), shipped(WORKER), settings.command_line(args))


def parser() -> argparse.ArgumentParser:
    """The one command tree: `asyncphp`, and under it each command of `COMMANDS`, declared once."""
    root = argparse.ArgumentParser(
        prog="asyncphp", description="One command for the daemon, publishing and the operator's tools."
    )
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.summary)
        command.define(sub)
        if command.takes_settings:
            # The daemon's whole command line, --version included, as asyncphp-daemon takes it.
            sub.add_argument("--version", action="version", version=f"asyncphp {__version__}")
            settings.add_arguments(sub)
    return root


def subcommands(tree: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser of each command in ``tree``, by name."""
    [commands] = [a for a in tree._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if args else 2
    by_name = {c.name: c for c in COMMANDS}
    if args[0] not in by_name:
        print(f"asyncphp: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr, end="")
        return 2
    tree = parser()
    parsed, extra = tree.parse_known_args(args)
    command, own = by_name[parsed.command], subcommands(tree)[parsed.command]
    # Refused by the command's parser rather than the root's, so the usage shown is the command's.
    if extra:
        own.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return command.run(parsed)
    except argparse.ArgumentError as exc:
        own.error(str(exc))


def usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS]
    return "asyncphp COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines) + "\n"


def _stream_tool(parser: argparse.ArgumentParser, what: str) -> None:
    """Declare a tool that works on one stream, with where to find it."""
    parser.description = (
        f"{what} Redis and the stream come from the daemon's settings (--config, then "
        "ASYNCPHP_* variables) unless given here."
    )
    settings.add_arguments(parser, ("redis_url",))
    # Not the daemon's --stream (the streams it reads, validated with its other settings): the one
    # stream this tool works on.
    parser.add_argument("--stream", help="default: the daemon's first stream")


def _stream_of(args: argparse.Namespace) -> tuple[str, str, str]:
    """The Redis URL, its password file and the stream a tool works on.

    Raises:
        SettingsError: the daemon's settings are invalid.
    """
    daemon = from_arguments(args, os.environ)
    stream = args.stream or (daemon.streams or ("commands",))[0]
    return daemon.redis_url, daemon.redis_password_file, stream


def define_dead(parser: argparse.ArgumentParser) -> None:
    _stream_tool(parser, "The dead letters of a stream.")
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("list", help="show the dead letters, oldest first")
    show.add_argument("--count", type=int)
    replay_text = (
        "add them to the stream again; a unique job's holding its key again, and not while another job "
        "of the key holds it (exit 3: those stay dead letters)"
    )
    for name, text in (("replay", replay_text), ("purge", "delete them")):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids (see list)")
        action.add_argument("--all", action="store_true", help="every dead letter of the stream")


def dead(args: argparse.Namespace) -> int:
    from asyncphp.ops import deadletters

    if args.action != "list" and not args.ids and not args.all:
        raise argparse.ArgumentError(None, f"{args.action}: give dead letter ids, or --all")
    ids = None if args.action != "list" and args.all else getattr(args, "ids", None)
    held = 0  # letters of unique jobs not replayed: another job of the key holds its guard
    try:
        url, password_file, stream = _stream_of(args)
    except SettingsError as exc:
        print(f"asyncphp dead: {exc}", file=sys.stderr)
        return 2
    try:
        client = redisurl.client(url, password_file, socket_connect_timeout=2.0, socket_timeout=5.0)
        if args.action == "list":
            shown = 0
            for letter in deadletters.listing(client, stream, args.count):
                shown += 1
                f = letter.fields
                print(
                    f"{letter.id}  entry {letter.original_id}  attempts {letter.text('attempts', '?')}  "
                    f"status {letter.text('status') or '-'}  {letter.text('reason')}\n"
                    f"    payload {preview(letter.payload)}"
                    + (f"\n    stderr {preview(f['stderr'])}" if f.get("stderr") else "")
                )
            print(f"{shown} dead letter(s) in {stream}:dead", file=sys.stderr)
        elif args.action == "replay":
            for done in deadletters.replay(client, stream, ids):
                if isinstance(done, deadletters.Held):
                    held += 1
                    print(
                        f"asyncphp dead: {done.letter_id} not replayed: job {done.holder} holds its unique "
                        f"key ({done.guard}); it stays a dead letter",
                        file=sys.stderr,
                    )
                else:
                    print(f"{done.letter_id} → {stream} {done.new_id}")
        else:
            print(f"purged {deadletters.purge(client, stream, ids)} dead letter(s)", file=sys.stderr)
    except (*redisurl.FAILURES, ValueError, OSError) as exc:
        print(f"asyncphp dead: {redisurl.redact(url)}: {exc}", file=sys.stderr)
        return 69
    return 3 if held else 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1")
    return int(text)


def define_delayed(parser: argparse.ArgumentParser) -> None:
    _stream_tool(
        parser,
        "The delayed jobs of a stream (publish --delay/--at), waiting in <stream>:delayed until due.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("list", help="show them, the first due first")
    show.add_argument("--count", type=_positive, help="the first N only")
    for name, text in (
        ("cancel", "remove them: they never run"),
        ("run-now", "move them into the stream now"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", nargs="+", metavar="ID", help="delayed job ids, d<n> (see list)")


def delayed(args: argparse.Namespace) -> int:
    from asyncphp.ops import delayed as jobs

    try:
        url, password_file, stream = _stream_of(args)
    except SettingsError as exc:
        print(f"asyncphp delayed: {exc}", file=sys.stderr)
        return 2
    try:
        client = redisurl.client(url, password_file, socket_connect_timeout=2.0, socket_timeout=5.0)
        if args.action == "list":
            found = jobs.listing(client, stream, args.count)
            for job in found:
                unique = f"  unique {job.unique}" if job.unique else ""
                print(f"{job.id}  due {job.due.astimezone().isoformat(timespec='milliseconds')}{unique}")
                print(f"    payload {preview(job.payload)}")
            total, _ = jobs.waiting(client, stream)
            print(f"{total} delayed job(s) in {stream}:delayed", file=sys.stderr)
            return 0
        if args.action == "cancel":
            removed = jobs.cancel(client, stream, args.ids)
            for job_id in removed:
                print(f"{job_id} cancelled")
            missing = [i for i in args.ids if i not in removed]
        else:
            moved = jobs.run_now(client, stream, args.ids)
            for job_id, entry_id in moved:
                print(f"{job_id} → {stream} {entry_id}")
            missing = [i for i in args.ids if i not in dict(moved)]
        if missing:
            print(
                "asyncphp delayed: not waiting (already moved, cancelled, or never there): "
                + ", ".join(missing),
                file=sys.stderr,
            )
            return 1
    except (*redisurl.FAILURES, ValueError, OSError) as exc:
        print(f"asyncphp delayed: {redisurl.redact(url)}: {exc}", file=sys.stderr)
        return 69
    return 0


COMMANDS: tuple[Command, ...] = (
    Command(
        "daemon", "run the daemon (asyncphp-daemon; --help for its settings)", _define_daemon, _daemon, True
    ),
    Command(
        "publish",
        "publish a job (asyncphp-publish)",
        _lazy("asyncphp.caller", "define"),
        _lazy("asyncphp.caller", "run"),
    ),
    Command(
        "check",
        "verify settings, Redis, the pool and the worker, like nginx -t (takes the daemon's flags)",
        _define_check,
        _lazy("asyncphp.ops.check", "run"),
        True,
    ),
    Command(
        "install",
        "render the unit, settings and pool for this host; show the diff; write with --yes",
        _lazy("asyncphp.ops.install", "define"),
        _lazy("asyncphp.ops.install", "run"),
    ),
    Command(
        "dev",
        "a private Redis and pool in a temp dir, the daemon in the foreground; Ctrl-C stops all",
        _define_dev,
        _dev,
        True,
    ),
    Command(
        "status",
        "every live daemon on every host, stream lag, dead letters, the pool's children",
        _lazy("asyncphp.ops.status", "define"),
        _lazy("asyncphp.ops.status", "run"),
        True,
    ),
    Command("dead", "list, replay or purge the dead letters of a stream", define_dead, dead),
    Command("delayed", "list, cancel or run now the delayed jobs of a stream", define_delayed, delayed),
)


if __name__ == "__main__":
    sys.exit(main())
