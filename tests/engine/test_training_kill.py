"""`kill -9` at random moments (during steps and checkpoint writes): resume always works.

Slow (about a minute): run with `make test-all` or `pytest -m slow`.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medseg.core.atomic import is_temporary

SETS = [
    "data.builtin={n_patients: 6, slices_per_patient: 2, size: 32}",
    "model.params={channels: [8, 16], num_res_units: 0}",
    "train.device=cpu",
    "data.batch_size=2",
    "train.epochs=60",
    "train.iterations_per_epoch=null",
]


@pytest.mark.slow
def test_kill_nine_ten_times_then_resume_to_the_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [x for s in SETS for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "medseg.cli", "train", "quickstart", "--no-progress", *args]
    rng = random.Random(0)
    kills = resumes = 0
    history = run / "history.csv"
    n_rows = lambda: len(history.read_text().splitlines()) if history.is_file() else 0  # noqa: E731
    for _ in range(10):
        resume = (run / "checkpoints" / "last.ckpt").is_file()
        cmd = [*base, "--resume", str(run)] if resume else [*base, "--out", str(run), "--overwrite"]
        before = n_rows()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and n_rows() <= before:  # wait for an epoch to finish
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 1.5))  # then kill inside a step, a validation or a checkpoint write
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        resumes += resume
        for ckpt in (run / "checkpoints").glob("*.ckpt"):
            if not is_temporary(ckpt):  # a killed write's temporary is no checkpoint
                torch.load(ckpt, map_location="cpu", weights_only=True)  # never truncated
    assert kills >= 8 and resumes >= 8, (kills, resumes)
    done = subprocess.run([*base, "--resume", str(run)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(60))
    assert not [p for p in run.rglob("*") if is_temporary(p)]  # the killed writes' temporaries were removed
