from __future__ import annotations

from asyncphp.logfmt import preview


def test_preview_is_one_escaped_line() -> None:
    assert preview('say "hi"\n\x00é\\'.encode() + b"\xff") == r'"say \"hi\"\n\x00é\\\xff"'


def test_preview_is_short() -> None:
    text = preview(b"x" * 10_000, limit=20)
    assert text == '"' + "x" * 20 + '"… (10000 bytes)'
