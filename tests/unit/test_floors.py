"""The floors of the house hold: imports run down them, none in a circle, and the lint rule that
keeps them (a ruff.toml per floor, beside pyproject.toml's own) says the same order."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "asyncphp"
# Lowest first. A module imports only from its own floor and those below; cli and pages/ are the top.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("wire",),
    ("core",),
    ("redisurl", "settings", "caller"),
    ("loop",),
    ("ops",),
    ("dev",),
    ("cli", "pages"),
)
# Beside the floors: the package's own facade (it re-exports the caller, lazily) and `python -m
# asyncphp`; and under them all, what imports nothing of asyncphp: any floor may use it.
BESIDE = ("__init__", "__main__")
UNDER = ("logfmt", "files", "version")
PURE = ("core", "wire")  # their code takes the time and bytes as values, and does no I/O


def _floor(module: str) -> int:
    """The floor of ``asyncphp.<part>…``."""
    part = module.split(".")[1]
    if part in UNDER:
        return -1
    for number, names in enumerate(FLOORS):
        if part in names:
            return number
    raise AssertionError(f"{module} is on no floor: add it to FLOORS (and to a ruff.toml)")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The asyncphp modules ``path`` imports, lazily too (``from asyncphp.x import y`` counts as x.y
    when asyncphp.x.y is a module)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("asyncphp.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asyncphp"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()
                found.add(name if is_module else node.module)
    return {name for name in found if name != "asyncphp"}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_runs_down_the_floors() -> None:
    climbing = []
    for path in _sources():
        module = _module(path)
        if module == "asyncphp" or module.split(".")[1] in BESIDE:
            continue
        for imported in _imports(path):
            if _floor(imported) > _floor(module):
                climbing.append(f"{module} imports {imported}")
    assert not climbing


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = {_module(path): _imports(path) for path in _sources()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError("a circle: " + " → ".join([*trail[trail.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def _bans(config: Path) -> set[str]:
    data = tomllib.loads(config.read_text())
    tool = data["tool"]["ruff"] if config.name == "pyproject.toml" else data
    return set(tool["lint"]["flake8-tidy-imports"]["banned-api"])


def test_each_floor_s_ruff_config_bans_the_floors_above_it() -> None:
    pure = _bans(PACKAGE / "core" / "ruff.toml") - {f"asyncphp.{n}" for floor in FLOORS for n in floor}
    assert "time" in pure and "socket" in pure
    for number, names in enumerate(FLOORS):
        above = {f"asyncphp.{name}" for floor in FLOORS[number + 1 :] for name in floor}
        for name in names:
            folder = PACKAGE / name
            if folder.is_dir():
                config = folder / "ruff.toml"
                expected = above | (pure if name in PURE else set())
                if above:
                    assert config.exists(), f"{name}/ needs a ruff.toml banning {sorted(above)}"
                    assert _bans(config) == expected, config
                    assert tomllib.loads(config.read_text())["extend"] == "../../../pyproject.toml"
                else:
                    assert not config.exists()
            elif above:  # a module beside the package's root: pyproject.toml's bans, for it alone
                assert _bans(ROOT / "pyproject.toml") == above, name
                ignores = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
                (pattern,) = [p for p, rules in ignores["per-file-ignores"].items() if "TID251" in rules]
                assert pattern.startswith("!src/asyncphp/{") and name in pattern, pattern
