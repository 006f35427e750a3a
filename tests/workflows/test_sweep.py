"""medseg sweep: grid parsing, key checks, point configs, resume after an interruption, Optuna, Ray."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import medseg.engine.train as engine_train
from helpers import tiny_config
from medseg.cli import app
from medseg.core.errors import ConfigError, MedsegWarning, RunError, TrainingError
from medseg.workflows.search import check_ray_address, run_optuna, run_ray
from medseg.workflows.sweep import grid_points, parse_grid, point_config, point_name, run_sweep, split_values


def _base(tmp_path: Path) -> dict:
    return tiny_config(data={"cache_dir": str(tmp_path / "cache")}, eval={"surface": {"enabled": False}})


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("a,b,c", ["a", "b", "c"]),
        ("[8,16],[16,32]", ["[8,16]", "[16,32]"]),
        ("{x: 1, y: 2},3", ["{x: 1, y: 2}", "3"]),
    ],
)
def test_split_values(text: str, values: list[str]) -> None:
    assert split_values(text) == values


def test_parse_grid_and_points() -> None:
    grid = parse_grid(["train.lr=1e-4,3e-4", "model.name=unet,segformer_b0", "model.params.channels=[8,16],[16,32]"])
    assert grid["train.lr"] == [1e-4, 3e-4] and grid["model.params.channels"] == [[8, 16], [16, 32]]
    points = grid_points(grid)
    assert len(points) == 8 and points[0] == {"train.lr": 1e-4, "model.name": "unet", "model.params.channels": [8, 16]}
    assert len(grid_points({"train.lr": [1e-3]}, seeds=3)) == 3
    assert [p["train.seed"] for p in grid_points({"train.lr": [1e-3]}, seeds=3, base_seed=5)] == [5, 6, 7]
    names = {point_name(p) for p in points}
    assert len(names) == 8 and "unet_lr0.0001_channels-8-16" in names
    assert parse_grid(["train.lr=1e-4..1e-2:log"])["train.lr"] == [{"range": [1e-4, 1e-2], "log": True}]
    with pytest.raises(ConfigError, match="a grid needs listed values"):
        grid_points(parse_grid(["train.lr=1e-4..1e-2"]))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.lrr=1e-3,1e-4", r"unknown swept key 'train.lrr' — fix: did you mean train.lr"),
        ("train.epoch=1,2", r"unknown swept key 'train.epoch' — fix: did you mean train.epochs"),
        ("model.nme=unet", r"did you mean model.name"),
        ("train.lr", r"is not KEY=V1,V2"),
    ],
)
def test_unknown_swept_key_names_the_closest(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_grid([item])


def test_model_change_resets_the_base_model_params(tmp_path: Path) -> None:
    base = _base(tmp_path)
    cfg = point_config(base, {"model.name": "segformer_b0"}, {"segformer_b0": {"depths": [1, 1, 1, 1]}})
    assert cfg.model.name == "segformer_b0" and cfg.model.params == {"depths": [1, 1, 1, 1]}
    cfg = point_config(base, {"model.name": "unet", "train.lr": 0.1})
    assert cfg.model.params == {"channels": [8, 16], "num_res_units": 0} and cfg.train.lr == 0.1 and cfg.name == "tiny-unet_lr0.1"
    cfg = point_config(base, {"model.name": "unet", "model.params.channels": [4, 8]}, {"unet": {"channels": [2, 4], "num_res_units": 0}})
    assert cfg.model.params == {"channels": [4, 8], "num_res_units": 0}


def test_pretrained_given_once_reaches_every_model_that_takes_weights(tmp_path: Path) -> None:
    base = _base(tmp_path)
    base["model"] = {"name": "segformer_b0", "params": {"pretrained": "weights/mit-b0", "pretrained_channels": "replicate"}}
    models = {"segformer_b0": {"decoder_hidden_size": 64}, "unet_resnet18": {}, "unet": {"channels": [8, 16]}}
    seg = point_config(base, {"model.name": "segformer_b0"}, models)
    assert seg.model.params == {"decoder_hidden_size": 64, "pretrained": "weights/mit-b0", "pretrained_channels": "replicate"}
    res = point_config(base, {"model.name": "unet_resnet18"}, models)
    assert res.model.params == {"pretrained": "weights/mit-b0", "pretrained_channels": "replicate"}
    with pytest.warns(MedsegWarning, match="unet trains from scratch"):
        plain = point_config(base, {"model.name": "unet"}, models)
    assert plain.model.params == {"channels": [8, 16]}
    base["model"]["params"]["pretrained"] = {"segformer_b0": "weights/mit-b0", "unet_resnet18": "weights/resnet18.pth"}
    assert point_config(base, {"model.name": "unet_resnet18"}, models).model.params["pretrained"] == "weights/resnet18.pth"
    with pytest.warns(MedsegWarning, match="unet_resnet34 trains from scratch .no weights were given"):
        assert "pretrained" not in point_config(base, {"model.name": "unet_resnet34"}, models).model.params


def test_run_names_do_not_call_another_model_by_the_base_models_name(tmp_path: Path) -> None:
    base = _base(tmp_path)
    base["name"] = "quickstart-unet"
    assert point_config(base, {"model.name": "segformer_b0", "train.lr": 0.001}).name == "quickstart-segformer_b0_lr0.001"
    assert point_config(base, {"model.name": "unet", "train.lr": 0.001}).name == "quickstart-unet-unet_lr0.001"


def test_sweep_resumes_after_an_interruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _base(tmp_path)
    grid = parse_grid(["train.lr=1e-3,3e-3"])
    out = tmp_path / "sweep"
    real_train = engine_train.train
    calls: list[str] = []

    def interrupted(cfg, run_dir, **kw):  # the second run is stopped by Ctrl-C after its first checkpoint
        calls.append(Path(run_dir).name)
        if len(calls) == 2:
            real_train(cfg, run_dir, **kw)
            engine_train.update_run(Path(run_dir), status="interrupted")
            raise KeyboardInterrupt
        return real_train(cfg, run_dir, **kw)

    monkeypatch.setattr(engine_train, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(base, grid, out)
    first = out / "runs" / "lr0.001"
    assert json.loads((first / "run.json").read_text())["status"] == "finished" and (first / "eval" / "test" / "summary.json").is_file()
    stamp = (first / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    monkeypatch.setattr(engine_train, "train", real_train)
    actions: list[tuple[str, str]] = []
    run_sweep(base, grid, out, on_point=lambda i, n, e: actions.append((e["name"], e["action"])))
    assert actions == [("lr0.001", "skipped"), ("lr0.003", "resumed")]
    assert (first / "checkpoints" / "best.ckpt").stat().st_mtime_ns == stamp
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in sweep["runs"]] == ["lr0.001", "lr0.003"] and all(r["best_val_dice"] is not None for r in sweep["runs"])
    assert (out / "sweep.csv").read_text().splitlines()[0].startswith("name,group,train.lr,best_val_dice")
    assert (out / "sensitivity.png").stat().st_size > 1000
    info = json.loads((out / "runs" / "lr0.003" / "run.json").read_text())
    assert info["sweep"]["group"] == "unet" and info["sweep"]["point"] == {"train.lr": 0.003}
    # a finished run trained with another base config is refused, not silently reused
    other = _base(tmp_path)
    other["train"]["epochs"] = 2
    with pytest.raises(RunError, match="finished run was trained with another config"):
        run_sweep(other, grid, out)


def test_sweep_command_and_compare_of_the_sweep(tmp_path: Path) -> None:
    ds_args = ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.builtin={n_patients: 6, slices_per_patient: 2, size: 32}"]
    tiny = [
        "--set",
        "train.epochs=1",
        "--set",
        "train.iterations_per_epoch=null",
        "--set",
        "model.params.channels=[4,8]",
        "--set",
        "train.device=cpu",
        "--set",
        "eval.surface.enabled=false",
    ]
    out = tmp_path / "sw"
    r = CliRunner().invoke(app, ["sweep", "quickstart", "--grid", "train.lr=1e-3,3e-3", "--out", str(out), *ds_args, *tiny])
    assert r.exit_code == 0, r.output
    assert "[2/2] lr0.003: trained" in r.output and (out / "runs" / "lr0.001" / "eval" / "test" / "metrics.csv").is_file()
    r = CliRunner().invoke(app, ["compare", str(out), "--out", str(tmp_path / "cmp"), "--no-macs"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]
    assert len(rows) == 2 and all(row["sensitivity_n_runs"] == 2 for row in rows)
    r = CliRunner().invoke(app, ["sweep", "quickstart", "--grid", "train.lrate=1e-3", "--out", str(out)])
    assert r.exit_code == 2 and "unknown swept key 'train.lrate'" in r.output and "train.lr" in r.output
    r = CliRunner().invoke(app, ["sweep", "quickstart", "--grid", "model.name=unet,segformer_b9", "--out", str(out)])
    assert r.exit_code == 2 and "unknown model 'segformer_b9'" in r.output
    r = CliRunner().invoke(app, ["sweep", "quickstart", "--out", str(out)])
    assert r.exit_code == 2 and "nothing to sweep" in r.output


def test_optuna_search_continues(tmp_path: Path) -> None:
    base = _base(tmp_path)
    space = parse_grid(["train.lr=1e-3..1e-2:log"])
    out = tmp_path / "opt"
    run_optuna(base, space, 2, out)
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["mode"] == "optuna" and len(sweep["runs"]) == 2 and "best" in sweep and (out / "optuna.db").is_file()
    seen: list[int] = []
    run_optuna(base, space, 3, out, on_point=lambda i, n, e: seen.append(i))
    assert seen == [2]  # only the third trial runs
    assert len(json.loads((out / "sweep.json").read_text())["runs"]) == 3


def test_unreachable_ray_address_fails_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(RunError, match=r"cannot reach the Ray cluster at 127.0.0.1:9 .*ray start --head"):
        check_ray_address("127.0.0.1:9", timeout=2)
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        check_ray_address("nonsense")
    r = CliRunner().invoke(app, ["sweep", "quickstart", "--grid", "train.lr=1e-3", "--ray", "ray://127.0.0.1:9", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "cannot reach the Ray cluster" in r.output
    assert time.perf_counter() - t0 < 20


@pytest.mark.slow
def test_ray_tune_on_a_local_instance(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    base = _base(tmp_path)
    out = run_ray(base, parse_grid(["train.lr=1e-3,3e-3"]), tmp_path / "ray", "local", cpus_per_trial=1, max_concurrent=1)
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["mode"] == "ray" and sorted(r["name"] for r in sweep["runs"]) == ["lr0.001", "lr0.003"]
    assert all(json.loads((out / "runs" / r["name"] / "run.json").read_text())["status"] == "finished" for r in sweep["runs"])


def test_a_failing_setting_does_not_stop_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def diverges(cfg, run_dir, **kw):
        raise TrainingError("loss is NaN at epoch 0", where=run_dir, fix="lower train.lr")

    monkeypatch.setattr(engine_train, "train", diverges)
    seen: list[str] = []
    with pytest.raises(TrainingError, match=r"2 of 2 runs failed \(lr10, lr20\); the others finished"):
        run_sweep(_base(tmp_path), parse_grid(["train.lr=10,20"]), tmp_path / "sw", on_point=lambda i, n, e: seen.append(e["action"]))
    assert seen == ["failed", "failed"]
    runs = json.loads((tmp_path / "sw" / "sweep.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["failed", "failed"] and "loss is NaN" in runs[0]["error"]
