"""The little markdown the settings' docs are written in: links, and their plain text for roff."""

from __future__ import annotations

import re

LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")


def plain(markdown: str) -> str:
    """The doc text without markdown, for the manual pages."""
    return LINK.sub(lambda match: match["text"], markdown).replace("`", "")
