from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import RECIPES_DIR, Config, config_from_dict, load_config, resolve_device
from medseg.core.errors import ConfigError


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"lrr": 0.1}}, r"c.yaml: unknown key 'train.lrr' — fix: did you mean train.lr"),
        ({"trian": {}}, r"unknown key 'trian' — fix: did you mean train"),
        ({"train": {"epochs": "many"}}, r"field 'train.epochs': .*integer.*got 'many'"),
        ({"train": {"epochs": -3}}, r"field 'train.epochs': Input should be greater than 0 \(got -3\)"),
        ({"train": {"lr": 0}}, r"field 'train.lr': Input should be greater than 0"),
        ({"train": {"lr": -1e-3}}, r"field 'train.lr'"),
        ({"data": {"split": {"ratios": [0.7, 0.2, 0.2]}}}, r"field 'data.split.ratios': ratios must .* sum to 1"),
        ({"data": {"batch_size": 0}}, r"field 'data.batch_size'"),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(_write(tmp_path, data))
    assert "\n" not in str(err.value)


def test_overrides_parse_yaml_values_and_nest() -> None:
    cfg = config_from_dict({}, ["train.lr=3e-4", "data.patch_size=[64, 64]", "model.params.channels=[4,8]", "train.deterministic=true"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.patch_size == [64, 64]
    assert cfg.model.params == {"channels": [4, 8]}
    assert cfg.train.deterministic is True


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        config_from_dict({}, ["train.lr"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.bogus'"):
        config_from_dict({}, ["train.bogus=1"])


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = config_from_dict({"name": "x", "train": {"lr": 0.01, "epochs": 3}, "model": {"params": {"channels": [8, 16]}}})
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert Config.model_validate(cfg.dump()) == cfg


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_device_resolution() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA was requested"):
            resolve_device("cuda")


def test_cli_prints_one_line_error_and_exits_nonzero(tmp_path: Path) -> None:
    p = _write(tmp_path, {"train": {"epochs": -1}})
    result = CliRunner().invoke(app, ["train", str(p), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    out = result.output.strip()
    assert out.startswith("error:") and "train.epochs" in out and len(out.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_config_prints_resolved_yaml() -> None:
    result = CliRunner().invoke(app, ["config", "quickstart", "--set", "train.lr=0.5"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["train"]["lr"] == 0.5


def test_config_error_comes_before_torch_and_names_the_override(tmp_path: Path) -> None:
    """A typo in --set is reported without importing torch, names the override, and leaves no run folder."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"sys.argv = ['medseg', 'train', 'quickstart', '--set', 'train.lrr=1', '--out', {str(tmp_path / 'run')!r}]\n"
        "from medseg.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "EXIT 2 False" in r.stdout, r.stdout + r.stderr
    assert "--set train.lrr=1: unknown key 'train.lrr' — fix: did you mean train.lr" in r.stderr
    assert not (tmp_path / "run").exists()


def test_recipe_names_load_from_python() -> None:
    assert load_config("quickstart").name == load_config(RECIPES_DIR / "quickstart.yaml").name
    with pytest.raises(ConfigError, match=r"config file not found — fix: give a YAML file or a recipe name \(quickstart"):
        load_config("no-such-recipe")
