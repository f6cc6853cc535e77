"""Compiles the per-message path with mypyc; everything else in pyproject.toml.

``ASYNCPHP_COMPILE=0`` builds the pure-Python package (the same code, interpreted): for a
platform without a C compiler, and for an editable install whose edits should take effect
without a rebuild (a compiled module shadows its ``.py``).
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules a message goes through, and the loop around them. Left out: what runs once or
# rarely (cli, settings, ops/, dev/, caller, overflow (the spill files), service, heartbeat, logsink,
# whose classes subclass logging's);
# asyncphp.loop.daemon, run as `python -m`, which runpy cannot do with an extension module (the
# Daemon itself is in engine.py); and loop/metrics, whose Metrics loop/prometheus subclasses (an
# interpreted class cannot inherit from a compiled one).
COMPILED = [
    "wire/body.py",
    "wire/fastcgi.py",
    "wire/replies.py",
    "wire/request.py",
    "wire/resp.py",
    "wire/scripts.py",
    "core/admission.py",
    "core/backoff.py",
    "core/jobs.py",
    "core/ledger.py",
    "core/link.py",
    "core/outcome.py",
    "core/reading.py",
    "core/schedule.py",
    "loop/engine.py",
    "loop/keeper.py",
    "loop/poller.py",
    "loop/pool.py",
    "loop/pubsub.py",
    "loop/redislink.py",
    "loop/story.py",
    "loop/streams.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("ASYNCPHP_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    return list(
        mypycify(
            [
                # Third-party packages are typed as Any whatever the build environment holds
                # (an isolated build has none of them): the same C code from any install, and
                # no run-time check of their return values against their stubs.
                "--no-site-packages",
                "--ignore-missing-imports",
                "--no-warn-unused-ignores",
                *(f"src/asyncphp/{path}" for path in COMPILED),
            ],
            opt_level="3",
            group_name="asyncphp",
        )
    )


setup(ext_modules=ext_modules())
