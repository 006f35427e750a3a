"""SIGTERM as an exception, so that ``finally`` blocks run and temporaries are removed when a job is stopped.

Python's default SIGTERM action ends the process at once: no ``finally``, no ``except BaseException``,
so an atomic write's temporary file or an extracted archive would stay. :func:`sigterm_raises` turns
the first SIGTERM into :class:`Terminated` (a ``SystemExit`` with status 143) raised in the main
thread; a second SIGTERM ends the process the default way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
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


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """End a child started with ``start_new_session=True`` and everything it started: SIGTERM to its process group,
    SIGKILL if it has not exited after ``grace_s`` seconds (a server with workers, a training with loader processes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
