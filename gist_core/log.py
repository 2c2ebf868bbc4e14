"""The library never prints: its messages for the user go through `logging` under the `gist_core` logger.

`show_on_terminal()` (the CLI calls it; a notebook may) prints them as plain lines: progress, notices and
warnings on stdout, beside the command's own output; the model registry's download and conversion lines on
stderr, so that `gist-lab models fetch` leaves only the folder's path on stdout. Without it, Python's
default applies (warnings and above on stderr).
"""
from __future__ import annotations

import logging
import sys

ROOT = "gist_core"
STDERR_LOGGERS = ("gist_core.model.registry",)


class _TerminalHandler(logging.Handler):
    """Writes to the sys.stdout / sys.stderr of the moment (pytest and notebooks swap them)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.name.startswith(STDERR_LOGGERS) else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001  (logging must never raise into the caller)
            self.handleError(record)


def show_on_terminal(level: int = logging.INFO) -> None:
    """Print gist_core's messages at `level` and above (idempotent)."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, _TerminalHandler) for h in logger.handlers):
        handler = _TerminalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
