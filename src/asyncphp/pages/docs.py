"""The settings tables of README.md and docs/, and the example settings file, made from the
settings' one declaration.

A table stands between two marker comments, ``<!-- settings: NAME NAME … -->`` (or ``all``) and
``<!-- settings: end -->``: the page picks the rows, the declaration writes them, so a page can show
the few settings its section is about without copying their text. The shipped ``systemd/daemon.toml``
holds every setting: its doc as a comment, its default, and an example where the declaration gives
one. ``python -m asyncphp.pages.docs`` rewrites the tables, that file and the manual pages
(`asyncphp.pages.manual`); a unit test fails when a committed one is not what this module makes (the
way gunicorn makes its settings page from its ``config.py``). Before, the table was written by hand,
and a blank line after one row cut the rest of it on GitHub.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from asyncphp.core.reading import Priority
from asyncphp.pages.markdown import LINK, plain
from asyncphp.settings import DEFAULT_CONFIG, SETTINGS, PoolAddress, Setting

ROOT = Path(__file__).resolve().parents[3]
COMMAND = "python -m asyncphp.pages.docs"
BEGIN = re.compile(r"^<!-- settings: (?P<names>[a-z_ ]+) -->$", re.MULTILINE)
END = "<!-- settings: end -->"
_BY_NAME = {s.name: s for s in SETTINGS}
EXAMPLE = ROOT / "src" / "asyncphp" / "files" / "daemon.toml"  # systemd/daemon.toml links here
# Set, at their defaults, in the example file rather than commented out: what an operator checks on
# every host. Not channels: set in the file, it would add pub/sub back to what --stream alone means.
SET_IN_FILE = frozenset(
    {"redis_url", "fpm_socket", "worker_script", "max_in_flight", "max_queued", "retry_for", "drain_timeout",
     "max_message_bytes", "max_nesting", "max_fields", "log_level"}
)  # fmt: skip


def documents(root: Path = ROOT) -> list[Path]:
    """The pages that may hold settings tables: the README and every page in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def rebase(markdown: str, page: PurePosixPath) -> str:
    """Links written relative to the repository's root, made relative to ``page``: the same doc
    text is shown in README.md and in docs/."""

    def one(match: re.Match[str]) -> str:
        target = match["target"]
        if "://" in target or target.startswith("#"):
            return match[0]
        path, sep, anchor = target.partition("#")
        if PurePosixPath(path) == page:
            relative = ""
        else:
            relative = PurePosixPath(os.path.relpath(path, page.parent)).as_posix()
        return f"[{match['text']}]({relative}{sep}{anchor})"

    return LINK.sub(one, markdown)


def default(s: Setting) -> str:
    """The default as one would write it in the TOML file, or ``none``."""
    value = s.default
    if value in ("", ()):
        return "none"
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value)
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Priority):
        return f"`{value.value}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    # A bare pipe would end the cell.
    return text.replace("|", "\\|")


def row(s: Setting, page: PurePosixPath) -> str:
    flag = f"`{s.flag}`" + (" (repeatable)" if s.repeatable else "")
    if isinstance(s.default, bool):
        flag += " (`true` or `false`)"
    cells = [f"`{s.name}`", f"{flag} / `{s.env}`", default(s), rebase(s.doc, page), "yes" if s.live else "no"]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def table(names: Sequence[str], page: PurePosixPath) -> str:
    """The table of the named settings, in the declaration's order (``all``: every one)."""
    if list(names) == ["all"]:
        chosen = list(SETTINGS)
    else:
        unknown = [name for name in names if name not in _BY_NAME]
        if unknown:
            raise ValueError(f"{page}: no such setting: {', '.join(unknown)}")
        chosen = [s for s in SETTINGS if s.name in names]
    lines = [
        "| setting (TOML) | flag / environment | default | what it does | live on SIGHUP |",
        "|---|---|---|---|---|",
        *(row(s, page) for s in chosen),
    ]
    return "\n".join(lines)


def render(text: str, page: PurePosixPath) -> str:
    """``text`` with every settings table made again from the declaration.

    Raises:
        ValueError: a table has no end marker, or names a setting that does not exist.
    """
    out: list[str] = []
    position = 0
    for match in BEGIN.finditer(text):
        if match["names"] == "end" or match.start() < position:
            continue  # the end marker matches the pattern too
        end = text.find(END, match.end())
        if end < 0:
            raise ValueError(f"{page}: {match[0]} has no {END}")
        made = table(match["names"].split(), page)
        out += [text[position : match.end()], "\n\n", made, "\n\n"]
        position = end
    out.append(text[position:])
    return "".join(out)


def toml(value: object) -> str:
    """A default as a TOML value; ``""`` for none."""
    if value in ("", ()):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Priority):
        return json.dumps(value.value)
    if isinstance(value, (str, PoolAddress)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return str(value)


def example_file() -> str:
    """The shipped example settings file, every setting in it."""
    lines = [
        f"# {DEFAULT_CONFIG}: settings for asyncphp-daemon.",
        "# Each can be overridden by ASYNCPHP_<FLAG NAME> in the environment, then by --<flag-name>.",
        '# Those marked "live" are applied by systemctl reload asyncphp-daemon (SIGHUP) without a restart.',
        '# A line commented out shows the default; one with "e.g.", or for a setting with none, an example.',
        f"# Made from the settings' declaration by {COMMAND}; every setting: docs/settings.md.",
    ]
    for s in SETTINGS:
        text = plain(s.doc)
        if s.doc[0].islower():  # a word, not a `value` such as true or host:port
            text = text[0].upper() + text[1:]
        text += "." + (" (live)" if s.live else "")
        lines += [
            "",
            *textwrap.wrap(text, 106, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False),
        ]
        value = toml(s.default)
        if value:
            lines.append(("" if s.name in SET_IN_FILE else "# ") + f"{s.name} = {value}")
        if s.example or not value:
            shown = s.example or '""'
            lines.append(("# e.g. " if value else "# ") + f"{s.name} = {shown}")
    return "\n".join(lines) + "\n"


def made(root: Path = ROOT) -> dict[Path, str]:
    """Each page, and the example settings file, with its text as this module makes it."""
    pages = {
        path: render(path.read_text(), PurePosixPath(path.relative_to(root).as_posix()))
        for path in documents(root)
    }
    return {**pages, root / EXAMPLE.relative_to(ROOT): example_file()}


def main(argv: Sequence[str] | None = None) -> int:
    from asyncphp.pages import manual  # the manual imports the commands; only regenerating needs them

    for path, text in made().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"docs: {path}", file=sys.stderr)
    return manual.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
