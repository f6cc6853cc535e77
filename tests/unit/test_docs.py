"""README.md and docs/ stay linked and current: every page in docs/ is reachable from the README,
every relative link and #anchor leads somewhere, no table is cut, and every settings table is the
one the settings' declaration makes."""

from __future__ import annotations

import re
import tomllib
import unicodedata
from pathlib import Path, PurePosixPath

import pytest

from asyncphp.pages import docs
from asyncphp.settings import SETTINGS
from tests.conftest import ROOT

PAGES = docs.documents(ROOT)
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _prose(text: str) -> str:
    """The text without its code: fenced blocks, indented blocks and inline code hold no links."""
    out: list[str] = []
    fenced = indented = False
    previous = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        indented = line.startswith("    ") and (indented or not previous.strip())
        out.append("" if fenced or indented else re.sub(r"`[^`]*`", "", line))
        previous = line
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = "".join(c for c in text.lower() if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, a repeated one numbered as GitHub numbers it."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def links(path: Path) -> list[str]:
    return [match["target"].strip("<>") for match in LINK.finditer(_prose(path.read_text()))]


def test_the_slug_is_githubs() -> None:
    assert slug("Operating it: `asyncphp check`, `status`, metrics, `install`, `dev`") == (
        "operating-it-asyncphp-check-status-metrics-install-dev"
    )
    assert slug("`pm = ondemand` and bursts") == "pm--ondemand-and-bursts"
    assert slug("Durable mode: Redis Streams") == "durable-mode-redis-streams"
    assert slug("The lock, its bounds, and builds that come out the same") == (
        "the-lock-its-bounds-and-builds-that-come-out-the-same"
    )


def test_there_are_pages_in_docs() -> None:
    assert len(DOCS) >= 5, "docs/ holds the README's reference pages"


@pytest.mark.parametrize("page", DOCS, ids=_name)
def test_every_page_in_docs_is_linked_from_the_readme(page: Path) -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert page.resolve() in linked, f"README.md does not link {_name(page)} (add it to 'Where to read on')"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_leads_to_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:: not ours to check
        path, _, anchor = target.partition("#")
        into = (page.parent / path).resolve() if path else page
        if not into.exists():
            broken.append(f"{target}: no such file")
        elif anchor and into.suffix == ".md" and anchor not in anchors(into):
            broken.append(f"{target}: no heading #{anchor} in {_name(into)}")
    assert broken == [], f"{_name(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_table_is_cut_by_a_blank_line(page: Path) -> None:
    # A blank line between two rows ends the table: on GitHub the rest of it rendered as raw pipes
    # (the README's settings table lost 29 of its rows after max_attempts).
    lines = page.read_text().splitlines()
    cuts = [n + 1 for n in range(1, len(lines) - 1) if not lines[n].strip() and lines[n - 1].startswith("|")
            and lines[n + 1].startswith("|")]  # fmt: skip
    assert cuts == [], f"{_name(page)}: a blank line inside a table at line(s) {cuts}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_settings_table_is_the_one_the_declaration_makes(page: Path) -> None:
    assert page.read_text() == docs.made(ROOT)[page], (
        f"{_name(page)}: a settings table is out of date: run {docs.COMMAND}"
    )


def test_the_readme_and_docs_have_settings_tables_and_one_of_all() -> None:
    marked = {_name(page): docs.BEGIN.findall(page.read_text()) for page in PAGES}
    assert [names for names in marked["README.md"] if names != "end"], "README.md shows no settings table"
    assert "all" in marked["docs/settings.md"]


def test_a_table_is_made_again_whatever_it_held() -> None:
    page = PurePosixPath("docs/x.md")
    stale = "before\n<!-- settings: max_fields -->\n| stale |\n<!-- settings: end -->\nafter\n"
    made = docs.render(stale, page)
    assert "stale" not in made and made.startswith("before\n")
    assert made.endswith("<!-- settings: end -->\nafter\n")
    assert "| `max_fields` | `--max-fields` / `ASYNCPHP_MAX_FIELDS` | `1000` |" in made
    assert docs.render(made, page) == made


def test_a_table_naming_no_setting_or_without_an_end_is_refused() -> None:
    with pytest.raises(ValueError, match="no such setting: max_feilds"):
        docs.render("<!-- settings: max_feilds -->\n<!-- settings: end -->\n", PurePosixPath("README.md"))
    with pytest.raises(ValueError, match="has no"):
        docs.render("<!-- settings: all -->\n", PurePosixPath("README.md"))


def test_links_in_the_declaration_are_made_relative_to_the_page() -> None:
    text = "see [Cluster](docs/cluster.md) and [Durable](README.md#durable-mode-redis-streams)"
    assert docs.rebase(text, PurePosixPath("README.md")) == (
        "see [Cluster](docs/cluster.md) and [Durable](#durable-mode-redis-streams)"
    )
    assert docs.rebase(text, PurePosixPath("docs/settings.md")) == (
        "see [Cluster](cluster.md) and [Durable](../README.md#durable-mode-redis-streams)"
    )
    assert docs.plain(text) == "see Cluster and Durable"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_a_doc_without_a_pipe_or_a_dangling_link(setting: docs.Setting) -> None:
    assert setting.doc and "|" not in setting.doc
    for target in docs.LINK.findall(setting.doc):
        path = target[1].partition("#")[0]
        assert (ROOT / path).exists(), f"{setting.name}: {target[1]}"


def test_the_example_settings_file_is_the_one_the_declaration_makes() -> None:
    committed = ROOT / "systemd" / "daemon.toml"
    assert committed.resolve() == ROOT / docs.EXAMPLE.relative_to(docs.ROOT)
    assert committed.read_text() == docs.example_file(), (
        f"systemd/daemon.toml is out of date: run {docs.COMMAND}"
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_value_the_example_file_shows_is_one_the_setting_takes(setting: docs.Setting) -> None:
    shown = re.findall(rf"^(?:# )?(?:e\.g\. )?({setting.name} = .*)$", docs.example_file(), re.MULTILINE)
    assert shown, f"systemd/daemon.toml shows no value of {setting.name}"
    for line in shown:
        setting.parse(tomllib.loads(line)[setting.name])


def test_the_layout_in_the_development_page_names_every_module() -> None:
    """A module added, moved or removed is said in the layout newcomers read."""
    text = (ROOT / "docs" / "development.md").read_text()
    layout = text[text.index("    src/asyncphp/") : text.index("    php/ ")]
    package = ROOT / "src" / "asyncphp"
    missing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and path.name not in layout
    ]
    assert not missing, "add these to the layout in docs/development.md"
    named = set(re.findall(r"\b(\w+)\.py\b", layout))
    gone = sorted(name for name in named if not list(package.rglob(f"{name}.py")))
    assert not gone, "these are no longer modules"
