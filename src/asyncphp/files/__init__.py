"""What an install needs beside the code, shipped inside the package: the unit, the example
settings, the php-fpm pool and the reference worker. A checkout's ``systemd/`` and ``fpm-pool/``
are links to these same files, so there is one copy of each."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

UNIT = "asyncphp-daemon.service"
SETTINGS = "daemon.toml"
POOL = "commands.conf"
WORKER = "worker.php"

# Every file, and where it is found in a checkout (``asyncphp install --from``).
IN_CHECKOUT = {UNIT: "systemd", SETTINGS: "systemd", POOL: "fpm-pool", WORKER: "fpm-pool"}


def shipped(name: str) -> Path:
    """The file as installed with the package (a wheel's files are plain files on disk)."""
    return Path(str(files(__name__) / name))


def in_checkout(checkout: Path, name: str) -> Path:
    return checkout / IN_CHECKOUT[name] / name
