"""The settings tables of README.md and docs/, made from the settings' one declaration.

A table stands between two marker comments, ``<!-- settings: NAME NAME … -->`` (or ``all``) and
``<!-- settings: end -->``: the page picks the rows, the declaration writes them, so a page can show
the few settings its section is about without copying their text. ``python -m asyncphp.dev.docs``
rewrites every table and the manual pages (`asyncphp.dev.manual`); a unit test fails when a
committed table is not what this module makes (the way gunicorn makes its settings page from its
``config.py``). Before, the table was written by hand, and a blank line after one row cut the rest
of it on GitHub.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from asyncphp.core.reading import Priority
from asyncphp.settings import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[3]
COMMAND = "python -m asyncphp.dev.docs"
BEGIN = re.compile(r"^<!-- settings: (?P<names>[a-z_ ]+) -->$", re.MULTILINE)
END = "<!-- settings: end -->"
LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
_BY_NAME = {s.name: s for s in SETTINGS}


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


def plain(markdown: str) -> str:
    """The doc text without markdown, for the manual pages."""
    return LINK.sub(lambda match: match["text"], markdown).replace("`", "")


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


def made(root: Path = ROOT) -> dict[Path, str]:
    """Each page and its text as this module makes it."""
    return {
        path: render(path.read_text(), PurePosixPath(path.relative_to(root).as_posix()))
        for path in documents(root)
    }


def main(argv: Sequence[str] | None = None) -> int:
    from asyncphp.dev import manual  # the manual imports the commands; only regenerating needs them

    for path, text in made().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"docs: {path}", file=sys.stderr)
    return manual.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
