"""``asyncphp-daemon`` and ``python -m asyncphp.loop.daemon``: settings in, :class:`Daemon` run.

The daemon itself is in ``asyncphp.loop.engine``, which may be compiled (see setup.py); this
module stays Python, as ``python -m`` runs only a module with Python code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from asyncphp.loop import factory
from asyncphp.loop.engine import EXIT_FLUSH_SECONDS
from asyncphp.loop.logsink import configure_logging
from asyncphp.loop.metrics import MetricsUnavailable
from asyncphp.loop.overflow import SpillError
from asyncphp.loop.service import Notifier, ServiceError
from asyncphp.loop.tracing import TracingUnavailable
from asyncphp.settings import SettingsError, load

EXIT_BAD_SETTINGS = 2


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = load(args, env)
    except SettingsError as exc:
        print(f"asyncphp-daemon: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    log, sink = configure_logging(settings.log_level, settings.journal_fields, env)
    try:
        notifier = Notifier(env)
        daemon = factory.daemon(settings, log, sink, notifier, reload=lambda: load(args, env))
    except (ServiceError, SpillError, TracingUnavailable, MetricsUnavailable) as exc:
        # Like bad settings, a restart cannot fix a missing binding, an unusable state_dir or a
        # metrics address another service holds (RestartPreventExitStatus=2).
        log.error("%s", exc)
        return EXIT_BAD_SETTINGS
    finally:
        sink.flush(wait=EXIT_FLUSH_SECONDS)
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
