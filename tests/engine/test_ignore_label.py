"""The ignore label: left out of the loss (checked by hand), validation Dice, sampling and evaluation; 2D and 3D."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import ConfigError, DatasetError
from medseg.data.builtin import make_builtin
from medseg.data.sampling import PatchSampler
from medseg.data.store import DatasetInfo, load_dataset, make_classes, write_dataset
from medseg.engine.module import SegModule
from medseg.losses import build_loss

EPS = 1e-5  # MONAI DiceLoss smooth_nr = smooth_dr


def _hand_dice(prob: np.ndarray, onehot: np.ndarray) -> float:
    """Mean over batch × channel of 1 - (2 Σ p t + eps) / (Σ p + Σ t + eps), on the given voxels only."""
    axes = tuple(range(2, prob.ndim))
    inter = (prob * onehot).sum(axes)
    den = prob.sum(axes) + onehot.sum(axes)
    return float((1 - (2 * inter + EPS) / (den + EPS)).mean())


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_loss_equals_hand_computation_on_annotated_voxels() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 5, 7)).astype(np.float64)
    target = rng.integers(0, 3, size=(2, 1, 5, 7))
    target[0, 0, :2] = 3  # ignore label = 3 (classes 0, 1, 2 predicted)
    target[1, 0, :, 4:] = 3
    valid = target[:, 0] != 3
    prob = _softmax(logits) * valid[:, None]
    onehot = np.stack([(target[:, 0] == k) for k in range(3)], 1).astype(float) * valid[:, None]
    dice = _hand_dice(prob, onehot)
    logp = np.log(_softmax(logits))
    picked = np.take_along_axis(logp, np.where(valid, target[:, 0], 0)[:, None], 1)[:, 0]
    ce = float(-(picked[valid]).mean())
    t = torch.tensor(logits, requires_grad=True)
    ours = build_loss("dice_ce", False, ignore_index=3)(t, torch.tensor(target))
    assert float(ours) == pytest.approx(dice + ce, rel=1e-9)
    assert float(build_loss("ce", False, ignore_index=3)(t, torch.tensor(target))) == pytest.approx(ce, rel=1e-9)
    assert float(build_loss("dice", False, ignore_index=3)(t, torch.tensor(target))) == pytest.approx(dice, rel=1e-9)
    # what the network says on ignored voxels does not matter: no gradient there
    ours.backward()
    assert t.grad is not None and float(t.grad.abs()[0, :, :2].max()) == 0.0 and float(t.grad.abs()[0, :, 2:].max()) > 0


def test_region_loss_with_ignore_channel_by_hand() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 2, 4, 6))
    target = (rng.random((2, 3, 4, 6)) > 0.5).astype(np.float64)  # 2 regions + ignore channel
    mask = (target[:, 2:3] < 0.5).astype(float)
    prob = 1 / (1 + np.exp(-logits))
    t = target[:, :2] * mask
    dice = _hand_dice(prob * mask, t)
    bce = -(t * np.log(prob) + (1 - t) * np.log(1 - prob))
    bce = float((bce * mask).sum() / (mask.sum() * 2))
    ours = build_loss("dice_ce", True, ignore_index=2)(torch.tensor(logits), torch.tensor(target))
    assert float(ours) == pytest.approx(dice + bce, rel=1e-9)


def test_deep_supervision_sums_masked_losses() -> None:
    rng = np.random.default_rng(5)
    outs = [torch.tensor(rng.normal(size=(1, 2, 4, 4))) for _ in range(3)]
    target = torch.tensor(rng.integers(0, 3, size=(1, 1, 4, 4)))
    single = build_loss("dice_ce", False, ignore_index=2)
    w = [4 / 7, 2 / 7, 1 / 7]
    expected = sum(wi * float(single(o, target)) for wi, o in zip(w, outs, strict=True))
    assert float(build_loss("dice_ce", False, ignore_index=2)(outs, target)) == pytest.approx(expected, rel=1e-9)


def test_losses_that_cannot_ignore_are_refused() -> None:
    with pytest.raises(ConfigError, match="loss 'focal' cannot leave out the ignore label"):
        build_loss("focal", False, ignore_index=3)


def test_sampler_never_centres_on_the_ignore_label() -> None:
    lab = np.zeros((1, 20, 20), dtype=np.int16)
    lab[0, 15:, :] = 2  # ignore label
    lab[0, 2:4, 2:4] = 1
    item = {"image": np.zeros((1, 20, 20), np.float32), "label": lab, "case_id": "c"}
    s = PatchSampler([4, 4], foreground_oversample=1.0, ignore_class=2)
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, patch = s(item, rng)
        assert (patch == 1).any()


def _ignore_dataset(root: Path, dims: int) -> Path:
    """phantom cases whose last class is renamed 'ignore' (their labels unchanged)."""
    name = "phantom2d" if dims == 2 else "phantom3d"
    opts = {"n_patients": 5, "slices_per_patient": 2, "size": 32} if dims == 2 else {"n_patients": 5, "size": 16}
    src = make_builtin(name, **opts)
    names = [*src.info.class_names[:-1], "ignore"]
    info = DatasetInfo(name="ign", dims=dims, modalities=src.info.modalities, classes=make_classes(names))
    write_dataset(root, info, src.cases)
    return root


@pytest.mark.parametrize("dims", [2, 3])
def test_training_and_evaluation_leave_the_ignore_label_out(dims: int, tmp_path: Path) -> None:
    from medseg.engine.train import train
    from medseg.workflows.evaluate import evaluate_run

    root = _ignore_dataset(tmp_path / "ds", dims)
    ds = load_dataset(root)
    assert ds.info.ignore_label == 3 and ds.info.foreground == [1, 2] and ds.info.n_outputs == 3
    model = {"name": "unet", "params": {"channels": [4, 8], "num_res_units": 0}}
    if dims == 3:
        model = {"name": "attention_unet", "params": {"channels": [4, 8, 16], "n_deep_supervision": 1}}
    cfg = config_from_dict(tiny_config(data={"dataset": str(root), "batch_size": 2}, model=model))
    run = train(cfg, tmp_path / "run", progress=False)
    module = SegModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert module.ignore_label == 3 and module.scored == [1, 2]
    out = evaluate_run(run, split="test", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ds.info.class_names[1:3]
    nn = json.loads((out / "summary_nnunet.json").read_text())
    for entry in nn["metric_per_case"]:
        cid = Path(entry["prediction_file"]).stem
        label = ds.load_case(cid).label
        with np.load(out / "predictions" / f"{cid}.npz") as z:
            pred = z["label"]
        assert pred.max() < 3  # the ignore label is never predicted
        valid = label != 3
        assert entry["metrics"]["1"]["TN"] + entry["metrics"]["1"]["FP"] + entry["metrics"]["1"]["FN"] + entry["metrics"]["1"]["TP"] == int(valid.sum())
        assert entry["metrics"]["2"]["TP"] == int(((pred == 2) & (label == 2)).sum())
        assert entry["metrics"]["2"]["FP"] == int(((pred == 2) & (label != 2) & valid).sum())
        assert "3" not in entry["metrics"]
    if dims == 2:  # the viewer stripes the unannotated voxels of the ground truth
        from medseg.demo.app import DemoState
        from medseg.viz.overlay import HATCH_COLOR

        st = DemoState(run)
        rv = st.runs.get("run")
        cid = next(c for c in rv.case_ids if (ds.load_case(c).label == 3).any())
        pic, _, _ = st.render("run", None, cid, "axial", 0, "auto (1–99 %)", 0.5, None, "side by side")
        rv.dataset.info = rv.dataset.info.model_copy(update={"ignore_label": None})
        plain, _, _ = st.render("run", None, cid, "axial", 0, "auto (1–99 %)", 0.5, None, "side by side")
        white = lambda a: int((a == np.asarray(HATCH_COLOR)).all(-1).sum())  # noqa: E731
        assert white(pic) > white(plain)


def test_hatch_stripes_only_the_mask() -> None:
    from medseg.viz.overlay import hatch

    rgb = np.zeros((6, 8, 3), np.uint8)
    mask = np.zeros((6, 8), bool)
    mask[2:5, 1:7] = True
    out = hatch(rgb, mask, (9, 9, 9), period=3)
    ii, jj = np.indices(mask.shape)
    assert np.array_equal((out == 9).all(-1), mask & ((ii + jj) % 3 == 0))


def test_validation_dice_skips_ignored_voxels() -> None:
    cfg = config_from_dict(tiny_config())
    m = SegModule(cfg.dump(), 2, 1, ["bg", "a", "ignore"], ignore_label=2)
    m._dice, m._accuracy = {}, {}
    y = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    y[0, 0, :2, :2] = 1
    y[0, 0, 2:, :] = 2
    pred = torch.zeros(1, 2, 4, 4)
    pred[0, 1, :2, :2] = 5.0
    pred[0, 1, 2:, :] = 5.0  # "a" predicted over the ignored rows: no false positive
    from medseg.engine.module import logits_to_labels, split_ignored
    from medseg.metrics.overlap import confusion_counts, metrics_from_counts

    p = logits_to_labels(pred, False).numpy()[0]
    r, valid = split_ignored(y[:, 0].numpy()[0], 2, False)
    assert metrics_from_counts(confusion_counts(p, r, m.scored, False, valid))["dice"][0] == 1.0
    assert metrics_from_counts(confusion_counts(p, r, m.scored, False))["dice"][0] < 1.0


def test_bad_ignore_labels(tmp_path: Path) -> None:
    src = make_builtin("phantom2d", n_patients=3, slices_per_patient=1, size=32)
    cases = list(src.cases)
    with pytest.raises(ValueError, match="must be the highest class"):
        DatasetInfo(name="x", dims=2, modalities=["MRI"], classes=make_classes(["background", "ignore", "a", "b"]))
    # a class named ignore that is not the highest, in a dataset.json edited by hand
    root = write_dataset(tmp_path / "ds", src.info, cases).root
    meta = json.loads((root / "dataset.json").read_text())
    meta["classes"][1]["name"] = "ignore"
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset.json: field '.*': .*the ignore label must be the highest class"):
        load_dataset(root)
    # data.ignore_label that is not the highest class: one line, exit 2, no run folder
    root2 = write_dataset(tmp_path / "ds2", src.info, cases).root
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(tiny_config(data={"dataset": str(root2), "ignore_label": 2})))
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "data.ignore_label" in line and "ignore label 2 is not the highest class" in line, line
    assert not (tmp_path / "run").exists()


def test_a_case_covered_by_the_ignore_label_is_refused(tmp_path: Path) -> None:
    src = make_builtin("phantom2d", n_patients=3, slices_per_patient=1, size=32)
    cases = list(src.cases)
    cases[1].label[:] = 3
    info = DatasetInfo(name="x", dims=2, modalities=src.info.modalities, classes=make_classes([*src.info.class_names[:-1], "ignore"]))
    with pytest.raises(DatasetError, match="every voxel is the ignore label 3") as e:
        write_dataset(tmp_path / "ds", info, cases)
    assert cases[1].case_id in str(e.value)
    assert not (tmp_path / "ds").exists()
