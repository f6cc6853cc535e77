"""asyncphp: start PHP background work from a Redis message, through a dedicated php-fpm pool."""

from __future__ import annotations

from typing import Any

from asyncphp.version import __version__

__all__ = ["__version__", "enqueue", "publish"]


def __getattr__(name: str) -> Any:
    # Imported lazily: an eager import would make `python -m asyncphp.caller` load the module
    # twice (runpy warns), and `import asyncphp` alone need not load redis.
    if name in ("publish", "enqueue"):
        from asyncphp import caller

        return getattr(caller, name)
    raise AttributeError(f"module 'asyncphp' has no attribute {name!r}")
