"""Glue to the service manager: sd_notify, and signals delivered to the loop (logging: ``logsink``)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterable, Mapping


class ServiceError(RuntimeError):
    """The service environment asks for something this install cannot do."""


class Notifier:
    """``sd_notify`` through python-systemd when ``NOTIFY_SOCKET`` is set, a no-op otherwise.

    Under ``Type=notify`` a missing READY=1 hangs ``systemctl start`` until its timeout, so a
    missing binding is an error at start-up rather than a silent no-op.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._send: Callable[[str], object] | None = None
        self.watchdog_interval = 0.0  # seconds between WATCHDOG=1; 0 when systemd does not ask
        if env.get("NOTIFY_SOCKET"):
            try:
                from systemd.daemon import notify
            except ImportError:
                raise ServiceError(
                    "NOTIFY_SOCKET is set but python-systemd is not installed: "
                    "pip install 'asyncphp[systemd]' (needs libsystemd-dev and pkg-config)"
                ) from None
            self._send = notify
            usec = env.get("WATCHDOG_USEC", "")
            pid = env.get("WATCHDOG_PID", "")
            if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
                # Half the timeout, as sd_watchdog_enabled(3) advises.
                self.watchdog_interval = int(usec) / 2e6

    def notify(self, *fields: str) -> None:
        if self._send is not None:
            self._send("\n".join(fields))

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")


class SignalWakeup:
    """Signals as bytes on a socket the event loop selects on.

    The handlers do nothing: Python writes each signal number to the wakeup fd, and the loop
    reads and acts on them, so no state changes or logging happen inside a handler.
    """

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._reader, self._writer = socket.socketpair()
        for sock in (self._reader, self._writer):
            sock.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _ignore) for sig in signals}

    def fileno(self) -> int:
        return self._reader.fileno()

    def received(self) -> list[signal.Signals]:
        """The signals delivered since the last call, in order."""
        try:
            data = self._reader.recv(256)
        except BlockingIOError:
            return []
        return [signal.Signals(number) for number in data]

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()


def _ignore(signum: int, frame: object) -> None:
    pass
