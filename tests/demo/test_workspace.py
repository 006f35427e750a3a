"""The workspace without a browser: paths kept inside the root, the New run form, the job queue, a server restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from medseg.core.errors import ConfigError
from medseg.demo.jobs import JobManager
from medseg.demo.newrun import RECIPE_AUTO, RunForm, validate_message, write_config
from medseg.demo.runs import DemoError
from medseg.demo.workspace import Workspace

SMALL = "{channels: [8, 16], num_res_units: 0}"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    from medseg.data.builtin import make_builtin
    from medseg.data.splits import make_splits, save_splits
    from medseg.data.store import write_dataset

    w = Workspace(tmp_path / "ws")
    data = make_builtin("phantom2d", n_patients=6, slices_per_patient=2, size=32)
    ds = write_dataset(w.root / "datasets" / "tiny", data.info, data.cases)
    save_splits(ds.splits_path, data.splits or make_splits(ds.labelled_patients))
    return w


def _form(name: str = "r1", **kw: object) -> RunForm:
    base = {"name": name, "dataset": "tiny", "model": "unet", "epochs": 2, "lr": 1e-2, "batch_size": 4, "model_params": SMALL}
    base.update(kw)
    return RunForm(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "..", "/etc", "/tmp", "~/x", "C:/Windows", "a/\x00b"])
def test_inside_refuses_paths_leaving_the_root(ws: Workspace, bad: str) -> None:
    with pytest.raises(DemoError) as e:
        ws.inside(bad, "data")
    assert "\n" not in e.value.one_line()
    assert "refused" in e.value.one_line() or "outside" in e.value.one_line()


def test_inside_refuses_a_symlink_out_of_the_root(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (ws.root / "data" / "link").symlink_to(outside)
    with pytest.raises(DemoError, match="outside the workspace"):
        ws.inside("link", "data")
    assert "link" not in ws.data_folders()  # not offered by the picker either
    (ws.root / "data" / "inner").mkdir()
    (ws.root / "data" / "inner_link").symlink_to(ws.root / "data" / "inner")
    assert ws.inside("inner_link", "data") == (ws.root / "data" / "inner").resolve()


def test_zip_upload_is_extracted_inside_and_refuses_traversal(ws: Workspace, tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("images/a.png", b"x")
        z.writestr("masks/a.png", b"y")
    assert ws.save_upload(good, "up1") == "uploads/up1"
    assert (ws.root / "data" / "uploads" / "up1" / "masks" / "a.png").read_bytes() == b"y"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("images/a.png", b"x")
        z.writestr("../../evil.txt", b"z")
    with pytest.raises(DemoError, match="path leaving its folder"):
        ws.save_upload(bad, "up2")
    assert not (ws.root / "data" / "uploads" / "up2").exists()
    assert not list((ws.root / "data" / "uploads").glob(".*"))  # nothing half-written
    assert not (tmp_path / "evil.txt").exists() and not (ws.root / "evil.txt").exists()
    with pytest.raises(DemoError, match="name"):
        ws.save_upload(good, "../up3")


# ---------------------------------------------------------------- the New run form


def test_form_builds_the_config_and_the_command(ws: Workspace) -> None:
    plan = _form(iterations_per_epoch=3).plan(ws)
    cfg = plan["config"]
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.batch_size, cfg.train.iterations_per_epoch) == (2, 1e-2, 4, 3)
    assert cfg.data.dataset == str(ws.root / "datasets" / "tiny") and cfg.model.params["channels"] == [8, 16]
    assert plan["argv"][3:] == ["train", "jobs/configs/r1.yaml", "--out", "runs/r1", "--no-progress"]
    assert plan["command"] == "medseg train jobs/configs/r1.yaml --out runs/r1 --no-progress"
    assert "epochs: 2" in plan["yaml"]
    assert write_config(plan).read_text(encoding="utf-8") == plan["yaml"]


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"epochs": 0}, "train.epochs"), ({"lr": -1.0}, "train.lr"), ({"batch_size": 0}, "data.batch_size"), ({"augment": "wild"}, "data.augment")],
)
def test_a_field_out_of_range_is_refused_with_its_name(ws: Workspace, kw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        _form(**kw).config(ws)
    assert f"'{field}'" in e.value.one_line()
    msg, yaml_text, command = validate_message(_form(**kw), ws)
    assert field in msg and yaml_text == "" and command == ""
    assert not (ws.root / "jobs" / "configs").exists()  # nothing written for a refused form


def test_form_refuses_bad_names_datasets_and_weights(ws: Workspace) -> None:
    for kw, match in (
        ({"name": "../evil"}, "run name"),
        ({"name": "a b"}, "run name"),
        ({"dataset": "../datasets/tiny"}, "data set name"),
        ({"pretrained": "../../etc/passwd"}, "leaving the workspace"),
        ({"recipe": "auto (not available yet)"}, "unknown recipe"),
        ({"model": "nonsense"}, "unknown model"),
    ):
        with pytest.raises((DemoError, ConfigError), match=match):
            _form(**kw).plan(ws)


def test_auto_runs_medseg_auto_with_the_validated_budget(ws: Workspace) -> None:
    plan = _form("a1", recipe=RECIPE_AUTO, time_budget=" 2m ").plan(ws)
    assert plan["kind"] == "auto" and plan["config"] is None
    assert plan["argv"][3:] == ["auto", "datasets/tiny", "--out", "runs/a1", "--time-budget", "120s", "--no-progress"]
    assert plan["command"] == "medseg auto datasets/tiny --out runs/a1 --time-budget 120s --no-progress"
    assert "time_budget: 120s" in plan["yaml"] and "Not used: model" in plan["yaml"]
    assert write_config(plan) is None and not (ws.root / "jobs" / "configs").exists()
    assert _form("a2", recipe=RECIPE_AUTO, time_budget="").plan(ws)["argv"][3:] == ["auto", "datasets/tiny", "--out", "runs/a2", "--no-progress"]
    for bad in ("soon", "-5m", "0", "10m --folds 5"):
        msg, yaml_text, command = validate_message(_form("a3", recipe=RECIPE_AUTO, time_budget=bad), ws)
        assert "field 'train.time_budget'" in msg and "\n" not in msg and yaml_text == command == ""
    with pytest.raises(DemoError, match="data set name"):
        _form("a3", recipe=RECIPE_AUTO, dataset="../x").plan(ws)
    # the job is medseg auto itself: a 1 s budget is refused by it in one line, before anything is trained
    jm = JobManager(ws, start=False)
    p = _form("a4", recipe=RECIPE_AUTO, time_budget="1s").plan(ws)
    job = jm.submit(p["kind"], p["name"], p["argv"], run=ws.rel(p["out"]))
    _wait(jm, job.id, ("finished", "failed"))
    assert (jm.get(job.id).state, jm.get(job.id).returncode) == ("failed", 2)
    assert "--time-budget: too short" in jm.log_tail(job.id).strip().splitlines()[-1]
    assert not (ws.root / "runs" / "a4" / "checkpoints").exists()
    assert jm.resume(job.id).argv[3:] == ["auto", "datasets/tiny", "--out", "runs/a4", "--time-budget", "1s", "--no-progress", "--resume"]


def test_the_tab_bar_holds_tabs_only(ws: Workspace) -> None:
    """Any other component between two tabs shifts gradio's tab order: the Upload tab showed as a second Cases."""
    import gradio as gr

    from medseg.demo.app import build_app

    demo = build_app(ws.runs_dir, jobs=JobManager(ws, start=False))
    tabs = next(b for b in demo.blocks.values() if isinstance(b, gr.Tabs))
    assert [type(c).__name__ for c in tabs.children] == ["Tab"] * 6
    assert [c.label for c in tabs.children] == ["Data sets", "New run", "Jobs", "Cases", "Upload", "Runs"]


# ---------------------------------------------------------------- the job queue


def _train_job(jm: JobManager, ws: Workspace, name: str, **kw: object) -> str:
    plan = _form(name, **kw).plan(ws)
    write_config(plan)
    return jm.submit("train", name, plan["argv"], run=f"runs/{name}").id


def _wait(jm: JobManager, job_id: str, states: tuple[str, ...], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while jm.get(job_id).state not in states:
        assert time.time() < deadline, f"{job_id} still {jm.get(job_id).state}: {jm.log_tail(job_id)}"
        jm.tick()
        time.sleep(0.3)


def test_two_jobs_run_at_once_and_the_third_waits(ws: Workspace) -> None:
    jm = JobManager(ws, max_jobs=2, start=False)
    ids = [_train_job(jm, ws, f"q{i}", epochs=50) for i in range(3)]
    jm.tick()
    assert [jm.get(i).state for i in ids] == ["running", "running", "queued"]
    with pytest.raises(DemoError, match="queued or running already"):
        jm.submit("train", "again", jm.get(ids[0]).argv, run="runs/q0")
    jm.stop(ids[0])
    _wait(jm, ids[0], ("stopped",), timeout=60)
    jm.tick()
    assert jm.get(ids[2]).state == "running"  # the queued job starts once a slot is free
    for i in ids[1:]:
        jm.stop(i)
    for i in ids[1:]:
        _wait(jm, i, ("stopped",), timeout=60)
    # the records survive a new manager (a page reload or a server restart)
    assert [j.state for j in JobManager(ws, start=False).jobs()] == ["stopped"] * 3


def test_a_queued_job_is_cancelled_and_a_non_medseg_command_refused(ws: Workspace) -> None:
    jm = JobManager(ws, max_jobs=1, start=False)
    job = jm.submit("train", "x", _form("c1").plan(ws)["argv"], run="runs/c1")
    assert jm.stop(job.id).state == "stopped"
    with pytest.raises(DemoError, match="medseg command"):
        jm.submit("train", "evil", ["/bin/sh", "-c", "rm -rf /"])


SERVER = textwrap.dedent(
    """
    import sys, time
    from medseg.demo.jobs import JobManager
    from medseg.demo.workspace import Workspace
    jm = JobManager(Workspace(sys.argv[1]), max_jobs=1, poll_s=0.2)
    print(jm.submit("train", "r", sys.argv[3:], run=sys.argv[2]).id, flush=True)
    time.sleep(600)
    """
)


def test_a_job_killed_with_the_server_is_resumed(ws: Workspace) -> None:
    """The server process dies (SIGKILL) mid-training: its job dies too, the run folder stays consistent,
    a restarted manager marks the job interrupted and ``medseg train --resume`` finishes the run."""
    import torch

    plan = _form("crash", epochs=4, iterations_per_epoch=12).plan(ws)
    write_config(plan)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ws.root), "runs/crash", *plan["argv"]], stdout=subprocess.PIPE, env=env, text=True)
    job_id = server.stdout.readline().strip()  # type: ignore[union-attr]
    history = ws.root / "runs" / "crash" / "history.csv"
    last = ws.root / "runs" / "crash" / "checkpoints" / "last.ckpt"  # written right after the epoch's history row
    deadline = time.time() + 240
    while not (history.is_file() and len(history.read_text().splitlines()) >= 2 and last.is_file()):
        assert time.time() < deadline and server.poll() is None, "the training never finished an epoch"
        time.sleep(0.2)
    record = json.loads((ws.root / "jobs" / f"{job_id}.json").read_text())
    server.send_signal(signal.SIGKILL)
    server.wait()
    deadline = time.time() + 60
    while os.path.exists(f"/proc/{record['pid']}") and "Z" not in Path(f"/proc/{record['pid']}/stat").read_text().split(")")[-1][:3]:
        assert time.time() < deadline, "the training outlived its server"
        time.sleep(0.2)
    jm = JobManager(ws, start=False)
    job = jm.get(job_id)
    assert job.state == "interrupted"
    run = ws.root / "runs" / "crash"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    rows = history.read_text().strip().splitlines()[1:]
    assert 0 <= ckpt["epoch"] < 4 and len(rows) >= ckpt["epoch"] + 1  # Lightning counts the saved epoch from 0
    jm.resume(job_id)
    assert jm.get(job_id).argv[3:] == ["train", "--resume", "runs/crash", "--no-progress"]
    _wait(jm, job_id, ("finished", "failed"))
    assert jm.get(job_id).state == "finished", jm.log_tail(job_id)
    assert [int(r.split(",")[0]) for r in history.read_text().strip().splitlines()[1:]] == [0, 1, 2, 3]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
