"""``asyncphp``: one command for the daemon, publishing and the operator's tools."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asyncphp import redisurl
from asyncphp.logfmt import preview
from asyncphp.settings import SettingsError, load
from asyncphp.settings import parser as settings_parser


@dataclass(frozen=True)
class Command:
    """A subcommand of `asyncphp`: what it is for, its command line, and what runs it.

    ``parser`` makes the command's own parser (for the manual; `run` parses with it). A command
    that ``takes_settings`` also takes every daemon setting as a flag (asyncphp-daemon(8)).
    """

    name: str
    summary: str
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[Sequence[str]], int]
    takes_settings: bool = False


def _daemon(argv: Sequence[str]) -> int:
    from asyncphp.loop.daemon import main as daemon_main

    return daemon_main(argv)


def _publish(argv: Sequence[str]) -> int:
    from asyncphp.caller import main as publish_main

    return publish_main(argv)


def _publish_parser() -> argparse.ArgumentParser:
    from asyncphp.caller import parser

    return parser({})  # the documented defaults, not this process's environment


def _check(argv: Sequence[str]) -> int:
    from asyncphp.ops.check import run as check

    return check(argv)


def _install(argv: Sequence[str]) -> int:
    from asyncphp.ops.install import run as install

    return install(argv)


def _install_parser() -> argparse.ArgumentParser:
    from asyncphp.ops.install import parser

    return parser()


def _dev(argv: Sequence[str]) -> int:
    from asyncphp.dev.sandbox import dev
    from asyncphp.files import POOL, WORKER, shipped

    return dev(shipped(POOL), shipped(WORKER), argv)


def _status(argv: Sequence[str]) -> int:
    from asyncphp.ops.status import run as status

    return status(argv)


def _status_parser() -> argparse.ArgumentParser:
    from asyncphp.ops.status import parser

    return parser()


def _settings_parser(prog: str, description: str) -> Callable[[], argparse.ArgumentParser]:
    def make() -> argparse.ArgumentParser:
        made = settings_parser()
        made.prog, made.description, made.epilog = prog, description, None
        return made

    return make


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    for known in COMMANDS:
        if known.name == command:
            return known.run(rest)
    print(f"asyncphp: unknown command {command!r}\n\n{usage()}", file=sys.stderr, end="")
    return 2


def usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    lines = [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS]
    return "asyncphp COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines) + "\n"


def _stream_tool(prog: str, what: str) -> argparse.ArgumentParser:
    """The parser of a tool that works on one stream, with where to find it."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{what} Redis and the stream come from the daemon's settings (--config, then "
        "ASYNCPHP_* variables) unless given here.",
    )
    parser.add_argument("--config", help="the daemon's TOML file")
    parser.add_argument("--redis-url")
    parser.add_argument("--stream", help="default: the daemon's first stream")
    return parser


def _stream_of(args: argparse.Namespace) -> tuple[str, str, str]:
    """The Redis URL, its password file and the stream a tool works on.

    Raises:
        SettingsError: the daemon's settings are invalid.
    """
    settings = load(["--config", args.config] if args.config else [], os.environ)
    stream = args.stream or (settings.streams or ("commands",))[0]
    return args.redis_url or settings.redis_url, settings.redis_password_file, stream


def dead_parser() -> argparse.ArgumentParser:
    parser = _stream_tool("asyncphp dead", "The dead letters of a stream.")
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
    return parser


def dead(argv: Sequence[str]) -> int:
    from asyncphp.ops import deadletters

    parser = dead_parser()
    args = parser.parse_args(argv)
    if args.action != "list" and not args.ids and not args.all:
        parser.error(f"{args.action}: give dead letter ids, or --all")
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


def delayed_parser() -> argparse.ArgumentParser:
    parser = _stream_tool(
        "asyncphp delayed",
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
    return parser


def delayed(argv: Sequence[str]) -> int:
    from asyncphp.ops import delayed as jobs

    args = delayed_parser().parse_args(argv)
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
        "daemon", "run the daemon (asyncphp-daemon; --help for its settings)", settings_parser, _daemon, True
    ),
    Command("publish", "publish a job (asyncphp-publish)", _publish_parser, _publish),
    Command(
        "check",
        "verify settings, Redis, the pool and the worker, like nginx -t (takes the daemon's flags)",
        _settings_parser(
            "asyncphp check",
            "Verify the settings, Redis (its version, the rights the daemon needs), the pool and the worker, "
            "one line each, like nginx -t. Exit status 0 when every check passed, 1 otherwise.",
        ),
        _check,
        True,
    ),
    Command(
        "install",
        "render the unit, settings and pool for this host; show the diff; write with --yes",
        _install_parser,
        _install,
    ),
    Command(
        "dev",
        "a private Redis and pool in a temp dir, the daemon in the foreground; Ctrl-C stops all",
        _settings_parser(
            "asyncphp dev",
            "A private Redis and php-fpm pool in a temp dir, the daemon in the foreground with the flags "
            "given; Ctrl-C stops all three.",
        ),
        _dev,
        True,
    ),
    Command(
        "status",
        "every live daemon on every host, stream lag, dead letters, the pool's children",
        _status_parser,
        _status,
        True,
    ),
    Command("dead", "list, replay or purge the dead letters of a stream", dead_parser, dead),
    Command("delayed", "list, cancel or run now the delayed jobs of a stream", delayed_parser, delayed),
)


if __name__ == "__main__":
    sys.exit(main())
