"""``asyncphp install``: the unit, the settings and the pool for this host, rendered from the
files shipped in the package (``asyncphp.files``; or a checkout's, ``--from``), shown as a diff,
written only with ``--yes``."""

from __future__ import annotations

import argparse
import difflib
import glob
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncphp.files import IN_CHECKOUT, POOL, SETTINGS, UNIT, WORKER, in_checkout, shipped


@dataclass(frozen=True)
class Rendered:
    target: Path  # where it belongs on the host
    content: str


def detect_php() -> str | None:
    """The newest PHP whose php-fpm pool.d exists here, e.g. "8.2"."""
    found = sorted(glob.glob("/etc/php/*/fpm/pool.d"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    return Path(found[-1]).parts[3] if found else None


def render(sources: Mapping[str, Path], php: str, daemon: Path) -> list[Rendered]:
    """The three files, consistent with each other: one socket path, one group."""
    pool = sources[POOL].read_text()
    unit = sources[UNIT].read_text()
    settings = sources[SETTINGS].read_text()
    unit = re.sub(
        r"^ExecStart=.*$", f"ExecStart={daemon} --config /etc/asyncphp/daemon.toml", unit, flags=re.M
    )
    unit = unit.replace("php8.2-fpm.service", f"php{php}-fpm.service")
    return [
        Rendered(Path("/etc/systemd/system/asyncphp-daemon.service"), unit),
        Rendered(Path("/etc/asyncphp/daemon.toml"), settings),
        Rendered(Path(f"/etc/php/{php}/fpm/pool.d/commands.conf"), pool),
    ]


def agreement(files: Sequence[Rendered]) -> list[str]:
    """Disagreements between the pool, the unit and the settings (empty when they agree)."""
    unit, settings, pool = (f.content for f in files)
    problems = []
    listen = _setting(pool, "listen")
    socket = re.search(r'^fpm_socket\s*=\s*"([^"]+)"', settings, re.M)
    if socket is None or socket.group(1) != listen:
        problems.append(
            f"the pool listens on {listen}, the settings say fpm_socket = {socket and socket.group(1)}"
        )
    group = _setting(pool, "listen.group")
    joined = re.search(r"^SupplementaryGroups=(.+)$", unit, re.M)
    if joined is None or group not in joined.group(1).split():
        problems.append(f"the socket's group is {group}, the unit joins {joined and joined.group(1)}")
    return problems


def _setting(ini: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s*=\s*(.+?)\s*$", ini, re.M)
    return match.group(1) if match else ""


def define(parser: argparse.ArgumentParser) -> None:
    """The command line of `asyncphp install`, declared on ``parser``."""
    parser.description = (
        "Render the unit, /etc/asyncphp/daemon.toml and the php-fpm pool for this host; show what "
        "would change; write only with --yes; then say which systemctl commands to run."
    )
    parser.add_argument("--yes", action="store_true", help="write the files")
    parser.add_argument(
        "--prefix", type=Path, help="write under this directory instead of / (for a look, or tests)"
    )
    parser.add_argument(
        "--php", help="PHP version of the php-fpm to add the pool to (default: the newest found)"
    )
    parser.add_argument(
        "--from", dest="source", type=Path, help="a checkout to take the files from (default: the package's)"
    )


def run(args: argparse.Namespace) -> int:
    php = args.php or detect_php()
    if php is None:
        print(
            "asyncphp install: no /etc/php/*/fpm/pool.d: apt-get install php-fpm, or give --php",
            file=sys.stderr,
        )
        return 1
    daemon = Path(sys.executable).parent / "asyncphp-daemon"
    if args.source:
        sources = {name: in_checkout(args.source, name) for name in IN_CHECKOUT}
    else:
        sources = {name: shipped(name) for name in IN_CHECKOUT}
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        what = f"{args.source} is not an asyncphp checkout" if args.source else "the package is incomplete"
        print(f"asyncphp install: {what}: no {', '.join(missing)}", file=sys.stderr)
        return 1
    files = render(sources, php, daemon)
    problems = agreement(files)
    for problem in problems:
        print(f"✗ {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"✓ pool, unit and settings agree: socket {_setting(files[2].content, 'listen')}, group www-data")

    root = args.prefix or Path("/")
    changed = False
    for item in files:
        path = root / item.target.relative_to("/")
        old = path.read_text() if path.exists() else None
        if old == item.content:
            print(f"  unchanged  {path}")
            continue
        changed = True
        if old is None:
            print(f"  new        {path}")
        else:
            print(f"  changed    {path}")
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(True), item.content.splitlines(True), str(path), str(path) + " (new)"
                )
            )
        if args.yes:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(item.content)
    if changed and not args.yes:
        print("\nnothing written: run again with --yes to write these files")
        return 0
    print(f"""
next, as root:
  install -D -m 0644 {sources[WORKER]} /usr/local/lib/asyncphp/worker.php
                                                          # or point worker_script at your own
  install -d -o www-data -g www-data /var/log/asyncphp    # the reference worker's log
  php-fpm{php} -t && systemctl reload php{php}-fpm          # load the pool
  systemctl daemon-reload
  systemctl enable --now asyncphp-daemon                  # returns once subscribed
  {Path(sys.executable).parent / "asyncphp"} check        # everything in place?
  journalctl -u asyncphp-daemon -f""")
    return 0
