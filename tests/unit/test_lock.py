"""The lock (requirements/*.lock, made by scripts/lock) holds what pyproject.toml asks for, at versions its
ranges allow, each with hashes, and its four files agree on every version."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(name: str) -> dict[str, str]:
    text = (LOCKS / name).read_text()
    entries = re.findall(
        r"^([A-Za-z0-9._-]+)==(\S+)((?:\s*;[^\\\n]*)?(?: \\\n\s+--hash=sha256:[0-9a-f]{64})+)", text, re.M
    )
    pins = {canonicalize_name(n): v for n, v, _ in entries}
    listed = re.findall(r"^([A-Za-z0-9._-]+)==", text, re.M)
    assert len(pins) == len(listed), f"{name}: every pin has its hashes"
    return pins


def _wanted(*extras: str, build: bool = False) -> list[Requirement]:
    wanted = [Requirement(r) for r in PROJECT["project"]["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in PROJECT["project"]["optional-dependencies"][extra]]
    if build:
        wanted += [Requirement(r) for r in PROJECT["build-system"]["requires"]]
    return wanted


@pytest.mark.parametrize(
    ("lock", "wanted"),
    [
        ("dev.lock", _wanted("systemd", "otel", "test", build=True)),
        ("runtime.lock", _wanted("systemd")),
        ("build.lock", [Requirement(r) for r in PROJECT["build-system"]["requires"]]),
    ],
    ids=["dev", "runtime", "build"],
)
def test_the_lock_holds_what_pyproject_asks_for_within_its_ranges(
    lock: str, wanted: list[Requirement]
) -> None:
    pins = _pins(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} has no {name}: run scripts/lock"
        assert requirement.specifier.contains(pins[name]), (
            f"{lock}: {name}=={pins[name]} is outside {requirement}"
        )
        for extra in requirement.extras:
            assert canonicalize_name(extra) in pins, f"{lock}: {requirement}'s extra is not locked"


def test_the_lock_files_agree_on_every_version() -> None:
    whole = _pins("dev.lock")
    for part in ("bootstrap.lock", "build.lock", "runtime.lock"):
        differ = {n: (v, whole.get(n)) for n, v in _pins(part).items() if whole.get(n) != v}
        assert differ == {}, f"{part} and dev.lock differ: run scripts/lock"
