"""Process-group shutdown of child processes (servers, trainings) started in their own session."""

from __future__ import annotations


def test_stop_process_group_ends_the_child_and_what_it_started() -> None:
    """A child that ignores SIGTERM is killed after the grace time, together with the process it started."""
    import os
    import subprocess
    import sys
    import time

    from medseg.core.signals import stop_process_group

    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    grandchild = int(proc.stdout.readline())  # type: ignore[union-attr]
    t0 = time.perf_counter()
    stop_process_group(proc, grace_s=1.0)
    assert proc.returncode == -9 and time.perf_counter() - t0 < 10
    for _ in range(50):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the grandchild survived")
