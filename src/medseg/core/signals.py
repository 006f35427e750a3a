"""SIGTERM as an exception, so that ``finally`` blocks run and temporaries are removed when a job is stopped.

Python's default SIGTERM action ends the process at once: no ``finally``, no ``except BaseException``,
so an atomic write's temporary file or an extracted archive would stay. :func:`sigterm_raises` turns
the first SIGTERM into :class:`Terminated` (a ``SystemExit`` with status 143) raised in the main
thread; a second SIGTERM ends the process the default way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(SystemExit):
    """The process received SIGTERM (exit status 128 + 15)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op elsewhere or when a handler is set)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
