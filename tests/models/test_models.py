"""Every registered model: forward + backward at tiny sizes, the contract, reference sizes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.core.errors import ModelError
from medseg.models import MODELS, count_parameters, create_model, list_models, macs, reference_parameters
from medseg.models.attention_unet import AttentionGate

SIZES = {2: [(32, 32), (37, 45)], 3: [(16, 16, 16), (13, 17, 19)]}
CASES = [pytest.param(n, d, id=f"{n}-{d}d") for n in list_models() for d in MODELS.meta(n)["dims"]]
IN_CH, N_CLS = 2, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _needs(name: str) -> None:
    if MODELS.meta(name)["family"] == "unetr":
        pytest.importorskip("einops", reason="MONAI's UNETR/SwinUNETR attention needs einops")
    if MODELS.meta(name)["training"] == "fit":
        pytest.importorskip("sklearn")


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_forward_backward_every_model(name: str, dims: int) -> None:
    """Tiny configuration (same code path, fewer channels): logits of the input's size, finite, gradients flow."""
    _needs(name)
    meta = MODELS.meta(name)
    torch.manual_seed(0)
    model = create_model(name, dims, IN_CH, N_CLS, **meta["tiny"])
    if meta["training"] == "fit":
        x = torch.randn(2, IN_CH, *SIZES[dims][0])
        y = (x[:, :1] > 0).long() + (x[:, :1] > 1).long()
        model.fit(x, y)
        for size in SIZES[dims]:
            out = model(torch.randn(1, IN_CH, *size))
            assert out.shape == (1, N_CLS, *size) and torch.isfinite(out).all()
        return
    model.train()
    for size in SIZES[dims]:
        model.zero_grad()
        x = torch.randn(2, IN_CH, *size)
        out = model(x)
        heads = out if isinstance(out, list) else [out]
        if meta["deep_supervision"] and meta["tiny"].get("n_deep_supervision"):
            assert isinstance(out, list) and len(out) == 1 + meta["tiny"]["n_deep_supervision"]
        for h in heads:
            assert h.shape == (2, N_CLS, *size), (name, size, h.shape)
            assert torch.isfinite(h).all()
        sum((h - 1).square().mean() for h in heads).backward()  # non-zero gradient even for zero-initialised heads
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, IN_CH, *SIZES[dims][1]))
    assert isinstance(out, torch.Tensor) and out.shape == (1, N_CLS, *SIZES[dims][1])


def test_every_family_is_registered() -> None:
    families = {MODELS.meta(n)["family"] for n in list_models()}
    assert families >= {"unet", "attention_unet", "improved_unet", "dense_unet", "smp", "fcn", "segformer", "unetr", "classical"}
    assert families >= {"resenc_unet", "mednext", "segresnet"}
    for arch in ("unet", "linknet", "fpn", "unetplusplus", "deeplabv3plus"):
        for enc in ("resnet18", "resnet34", "resnet50"):
            assert f"{arch}_{enc}" in MODELS
    assert {f"segformer_b{i}" for i in range(6)} <= set(list_models())
    assert list_models(training="fit") == ["classical_gbm", "classical_logreg", "classical_rf"]
    assert "improved_unet3d" not in list_models(spatial_dims=2)


@pytest.mark.parametrize(
    ("name", "dims", "expected_m"),
    [
        ("segformer_b2", 2, 27.3),
        ("unet_resnet34", 2, 24.4),
        ("linknet_resnet18", 2, 11.7),
        ("fcn8s", 2, 134.3),
        ("swin_unetr", 3, 62.2),
        ("unetr", 3, 92.8),
    ],
)
def test_reference_parameter_counts(name: str, dims: int, expected_m: float) -> None:
    """Built on the meta device (no memory, no init); 1 input channel, 3 classes."""
    _needs(name)
    assert round(reference_parameters(name, dims) / 1e6, 1) == expected_m


def test_reference_count_equals_a_real_build() -> None:
    model = create_model("unet_resnet34", 2, 1, 3)
    assert count_parameters(model) == reference_parameters("unet_resnet34", 2) == 24_430_387


def test_attention_gate_depends_on_gating_signal() -> None:
    torch.manual_seed(0)
    for conv_mapping in (False, True):
        gate = AttentionGate(2, in_channels=4, gating_channels=8, inter_channels=4, conv_mapping=conv_mapping).eval()
        x = torch.randn(1, 4, 16, 16)
        g1, g2 = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
        y1, a1 = gate(x, g1)
        y2, a2 = gate(x, g2)
        assert a1.shape == (1, 1, 16, 16) and a1.min() >= 0 and a1.max() <= 1
        assert not torch.allclose(a1, a2) and not torch.allclose(y1, y2)
        assert torch.allclose(gate(x, g1)[0], y1)


def test_attention_changes_the_network_output() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    with_att = create_model("attention_unet", 2, 1, 2, channels=(4, 8, 16)).eval()
    torch.manual_seed(0)
    without = create_model("attention_unet", 2, 1, 2, channels=(4, 8, 16), attention=False).eval()
    assert not torch.allclose(with_att(x), without(x))
    convmap = create_model("attention_unet_convmap", 2, 1, 2, channels=(4, 8, 16))
    assert count_parameters(convmap) > count_parameters(with_att)


@pytest.mark.parametrize(
    ("name", "dims", "kwargs", "n_heads"),
    [
        ("attention_unet", 2, {"channels": (4, 8, 16, 32), "n_deep_supervision": 2}, 3),
        ("attention_unet_deeper", 3, {"channels": (2, 4, 8, 16), "n_deep_supervision": 1}, 2),
        ("improved_unet3d", 3, {"base_filters": 2, "depth": 4, "n_deep_supervision": 2}, 3),
        ("improved_unet3d", 3, {"base_filters": 2, "depth": 4}, 1),
    ],
)
def test_deep_supervision_heads(name: str, dims: int, kwargs: dict, n_heads: int) -> None:
    model = create_model(name, dims, 1, 2, **kwargs).train()
    size = (16,) * dims
    out = model(torch.randn(2, 1, *size))
    outs = out if isinstance(out, list) else [out]
    assert len(outs) == n_heads
    assert all(o.shape == (2, 2, *size) for o in outs)
    assert isinstance(model.eval()(torch.randn(1, 1, *size)), torch.Tensor)


def test_deep_supervision_out_of_range() -> None:
    with pytest.raises(ModelError, match="n_deep_supervision"):
        create_model("attention_unet", 2, 1, 2, channels=(4, 8, 16), n_deep_supervision=2)


def test_macs_counts_convolutions() -> None:
    model = create_model("unet", 2, 1, 2, channels=(4, 8), num_res_units=0)
    m = macs(model, (1, 1, 32, 32))
    assert m > 0
    assert macs(model, (1, 1, 64, 64)) == pytest.approx(4 * m, rel=0.01)
    assert model.training  # mode restored


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: create_model("segformerb2", 2, 1, 3), r"unknown model 'segformerb2'.*did you mean segformer_b2"),
        (lambda: create_model("improved_unet3d", 2, 1, 3), r"supports 3D, not 2D"),
        (lambda: create_model("segformer_b0", 3, 1, 3), r"supports 2D, not 3D"),
        (lambda: create_model("unet", 2, 1, 0), r"num_classes must be an integer ≥ 1"),
        (lambda: create_model("unet", 2, 0, 2), r"in_channels must be an integer ≥ 1"),
        (lambda: create_model("unet", 2, 1, 2, chanels=(4, 8)), r"bad argument for model 'unet'.*chanels"),
        (lambda: create_model("fcn8s", 2, 1, 2, pretrained_channels="rgb"), r"pretrained_channels must be"),
    ],
)
def test_bad_arguments_are_one_line_model_errors(call, match: str) -> None:
    with pytest.raises(ModelError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_input_channel_mismatch_is_a_model_error() -> None:
    model = create_model("unet", 2, 1, 2, channels=(4, 8))
    with pytest.raises(ModelError, match=r"expects 1 input channel\(s\), got 3") as e:
        model(torch.zeros(1, 3, 32, 32))
    assert "\n" not in str(e.value)


def test_outputs_are_deterministic_in_eval() -> None:
    torch.manual_seed(0)
    model = create_model("dense_unet", 2, 1, 2, **MODELS.meta("dense_unet")["tiny"]).eval()
    x = torch.randn(1, 1, 37, 45)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dims"), CASES)
def test_default_configuration_forward(name: str, dims: int) -> None:
    """The published sizes (not the tiny ones) run too; slow: `make test-all`."""
    _needs(name)
    if MODELS.meta(name)["training"] == "fit":
        pytest.skip("covered by the fast test")
    model = create_model(name, dims, 1, 3).eval()
    size = (64, 64) if dims == 2 else (32, 32, 32)
    with torch.no_grad():
        out = model(torch.randn(1, 1, *size))
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_cli_lists_and_describes_models() -> None:
    from typer.testing import CliRunner

    from medseg.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["models", "--dims", "3"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "improved_unet3d" in res.output and "swin_unetr" in res.output and "segformer_b2" not in res.output
    res = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert "27.3 M" in res.output and "24.4 M" in res.output  # segformer_b2, unet_resnet34
    res = runner.invoke(app, ["models", "attention_unet"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "n_deep_supervision" in res.output and "conv_mapping" in res.output
    res = runner.invoke(app, ["models", "segformerb2"], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "did you mean segformer_b2" in res.output


def test_unetr_any_size_matches_monai_at_its_img_size() -> None:
    """The re-stated forward is MONAI's at ``img_size``, and interpolates position embeddings elsewhere."""
    pytest.importorskip("einops")
    from monai.networks.nets import UNETR

    from medseg.models.unetr import AnySizeUNETR

    torch.manual_seed(0)
    kw = {"in_channels": 1, "out_channels": 2, "img_size": (32, 32), "feature_size": 4, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "spatial_dims": 2}
    net = AnySizeUNETR(**kw).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), UNETR.forward(net, x))
        assert net(torch.randn(1, 1, 48, 64)).shape == (1, 2, 48, 64)


def test_pad_to_multiple_crops_back_exactly() -> None:
    from medseg.models.wrappers import PadToMultiple

    class Check(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            assert all(s % 8 == 0 and s >= 16 for s in x.shape[2:])
            return [x * 2, x + 1]

    wrap = PadToMultiple(Check(), 8, min_size=16, in_channels=1)
    x = torch.randn(1, 1, 13, 17, 5)
    a, b = wrap(x)
    torch.testing.assert_close(a, x * 2)
    torch.testing.assert_close(b, x + 1)
    assert (wrap.multiple, wrap.min_size) == (8, 16)
