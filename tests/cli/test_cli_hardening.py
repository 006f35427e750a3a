"""What a person reads from `medseg train`: medseg's own lines only; bad configs refused before a run folder
exists; an unsafe checkpoint refused in one line; SIGTERM stops a run cleanly; flags shown without a type."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.core.atomic import is_temporary

SRC = Path(__file__).resolve().parents[2] / "src"
runner = CliRunner()


def medseg(*args: str, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("MEDSEG_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "medseg.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A one-epoch run trained through the command line, and what it printed."""
    root = tmp_path_factory.mktemp("cli")
    cfg = tiny_config()
    cfg["data"]["cache_dir"] = str(root / "cache")
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    res = medseg("train", "tiny.yaml", "--out", "runs/t", "--no-progress", cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, res


def medseg_lines_only(stderr: str) -> None:
    """stderr holds medseg's own warning (a training this short makes few steps) and nothing else."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) <= 2, stderr  # no "💡 Tip … litlogger", no LeafSpec warning, no "GPU available", no "weights_only"
    if lines:
        assert "UserWarning: this training makes only" in lines[0] and "contextlib" not in lines[0] and "lightning" not in stderr.lower(), stderr


def test_training_prints_medseg_lines_only(trained: tuple[Path, subprocess.CompletedProcess]) -> None:
    root, res = trained
    assert res.stdout.strip() == "run folder: runs/t", res.stdout
    medseg_lines_only(res.stderr)
    resumed = medseg("train", "--resume", "runs/t", "--set", "train.epochs=2", "--no-progress", cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip() == "run folder: runs/t", resumed.stdout
    medseg_lines_only(resumed.stderr)
    assert len((root / "runs/t/history.csv").read_text().splitlines()) == 3


def test_unsafe_checkpoint_is_refused_in_one_line(trained: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    root, _ = trained
    run = tmp_path / "evil"
    shutil.copytree(root / "runs/t", run)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "x": Payload()}, run / "checkpoints" / "last.ckpt")
    config_before = (run / "config.yaml").read_text()
    res = medseg("train", "--resume", str(run), "--set", "train.epochs=5", "--no-progress", cwd=root)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stdout + res.stderr
    assert "last.ckpt" in lines[0] and "weights_only=True" in lines[0] and "posix.system" in lines[0], lines[0]
    assert not marker.exists() and (run / "config.yaml").read_text() == config_before


def test_sigterm_stops_training_cleanly(trained: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "runs/t", run)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medseg.cli", "train", "--resume", str(run), "--set", "train.epochs=200", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = run / "history.csv"
    deadline = time.time() + 900
    while time.time() < deadline and len(history.read_text().splitlines()) < 4:  # two more epochs: inside the loop
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("medseg: stopped (SIGTERM)"), err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not [p for p in run.rglob("*") if is_temporary(p)]
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        torch.load(ckpt, map_location="cpu", weights_only=True)


SIZES = [
    "data.patch_size=[-8,0]",
    "data.patch_size=[16]",
    "data.patch_size=[100000,100000]",
    "data.preprocess.resize=[0,32]",
    "data.preprocess.pad_to=[32,-1]",
    "data.preprocess.spacing=[1.0,0.0]",
    "data.builtin.size=-8",
    "data.builtin.n_patients=0",
]


@pytest.mark.parametrize("override", SIZES)
def test_invalid_sizes_are_refused_before_a_run_folder_exists(tmp_path: Path, override: str) -> None:
    out = tmp_path / "runs" / "x"
    sets = [x for s in ("data.builtin={n_patients: 6, slices_per_patient: 2, size: 32}", "train.device=cpu", override) for x in ("--set", s)]
    res = runner.invoke(app, ["train", "quickstart", "--out", str(out), "--no-progress", *sets])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output[-3000:]
    assert override.split("=")[0] in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "expected"), [("model.name=unett", "did you mean unet"), ("model.params={bogus: 1}", "bogus"), ("train.loss=dise", "loss")]
)
def test_bad_model_leaves_no_run_folder(tmp_path: Path, override: str, expected: str) -> None:
    cfg = tiny_config()
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "runs" / "x"
    res = runner.invoke(app, ["train", str(tmp_path / "c.yaml"), "--out", str(out), "--no-progress", "--set", override])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and expected in lines[0], res.output[-3000:]
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_flags_are_shown_without_a_type() -> None:
    for args in (["--help"], ["train", "--help"], ["import", "--help"]):
        res = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert res.exit_code == 0 and "<bool>" not in res.output, res.output
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    version = next(ln for ln in res.output.splitlines() if "--version" in ln)
    assert "print the version" in version and "<" not in version
    assert runner.invoke(app, ["--version"]).output.startswith("medseg ")
