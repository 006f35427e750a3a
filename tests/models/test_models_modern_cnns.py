"""ResEnc U-Net, MedNeXt and SegResNet: parameter counts against independent counts (by hand, nnU-Net's own
network, MONAI's factories), the same function as the reference implementations, deep-supervision heads,
2D and 3D, and the one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.core.errors import ModelError
from medseg.models import MODELS, count_parameters, create_model, reference_parameters
from medseg.models.complexity import build_on_meta
from medseg.models.resenc_unet import ResidualBlockD
from medseg.models.wrappers import resize_to

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW = ["resenc_unet_m", "resenc_unet_l", "mednext_s", "mednext_b", "mednext_m", "mednext_l", "segresnet"]

#: parameters of nnU-Net's own ``ResidualEncoderUNet`` (dynamic_network_architectures 0.4.4) with the ResEnc
#: planner's arguments (widths 32·2^s ≤ 320/512, blocks (1,3,4,6,6,6,…), 1 decoder conv, conv bias, affine
#: instance norm), 1 input channel, 3 classes, all its segmentation heads
NNUNET_RESENC = {
    "3d-6": 102_350_575,  # isotropic strides 2, kernels 3
    "2d-7": 105_918_322,
    "3d-aniso": 101_858_479,  # strides (1,1,1),(1,2,2),(2,2,2)×3,(1,2,2); kernels (1,3,3), (3,3,3)×5
}
ANISO_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
ANISO_KERNELS = [[1, 3, 3]] + [[3, 3, 3]] * 5


def resenc_by_hand(dims: int, n_stages: int, in_ch: int = 1, n_cls: int = 3) -> dict[str, int]:
    """The ResEnc preset's parameters counted from its description (isotropic kernels 3, strides 2)."""
    k3, k2 = 3**dims, 2**dims
    cap = 320 if dims == 3 else 512
    f = [min(cap, 32 * 2**s) for s in range(n_stages)]
    blocks = (1, 3, 4, 6, 6, 6, 6)

    def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
        return cin * cout * k + (cout if bias else 0)

    def block(cin: int, cout: int) -> int:
        proj = conv(cin, cout, 1, bias=False) + 2 * cout if cin != cout else 0  # 1×1 conv + norm on the skip
        return conv(cin, cout, k3) + 2 * cout + conv(cout, cout, k3) + 2 * cout + proj

    out = {"stem": conv(in_ch, f[0], k3) + 2 * f[0]}
    for s in range(n_stages):
        out[f"stage{s}"] = block(f[max(s - 1, 0)], f[s]) + (blocks[s] - 1) * block(f[s], f[s])
    out["decoder"] = sum(conv(f[s + 1], f[s], k2) + conv(2 * f[s], f[s], k3) + 2 * f[s] for s in range(n_stages - 1))
    out["heads"] = sum(conv(f[s], n_cls, 1) for s in range(n_stages - 1))  # every decoder stage, as nnU-Net builds them
    return out


# ----------------------------------------------------------------------------- ResEnc
def test_resenc_first_stages_counted_by_hand() -> None:
    net = build_on_meta("resenc_unet_m", 3).net
    hand = resenc_by_hand(3, 6)
    assert count_parameters(net.stem) == hand["stem"] == 1 * 32 * 27 + 32 + 64
    assert count_parameters(net.stages[0]) == hand["stage0"] == 2 * (32 * 32 * 27 + 32 + 64)
    assert count_parameters(net.stages[1]) == hand["stage1"] == 611_584
    assert [len(s) for s in net.stages] == [1, 3, 4, 6, 6, 6]
    assert [s[0].conv1.conv.out_channels for s in net.stages] == [32, 64, 128, 256, 320, 320]


@pytest.mark.parametrize(("dims", "n_stages", "key"), [(3, 6, "3d-6"), (2, 7, "2d-7")])
def test_resenc_full_preset_matches_nnunet_and_the_hand_count(dims: int, n_stages: int, key: str) -> None:
    hand = sum(resenc_by_hand(dims, n_stages).values())
    assert hand == NNUNET_RESENC[key]
    for name in ("resenc_unet_m", "resenc_unet_l"):  # the presets share the network (they differ in the plan)
        assert reference_parameters(name, dims, n_deep_supervision=n_stages - 2) == hand
    # without deep supervision only the full-resolution head is built
    widths = [min(320 if dims == 3 else 512, 32 * 2**s) for s in range(n_stages)]
    heads = sum(3 * (w + 1) for w in widths[1 : n_stages - 1])
    assert reference_parameters("resenc_unet_l", dims) == hand - heads


def test_resenc_plan_strides_and_kernels() -> None:
    """nnU-Net's layout for 3 × 0.78 × 0.78 mm data, in nnU-Net's form and in plan.json's (no stage-0 stride)."""
    n = reference_parameters("resenc_unet_l", 3, strides=ANISO_STRIDES, kernel_sizes=ANISO_KERNELS, n_deep_supervision=4)
    assert n == NNUNET_RESENC["3d-aniso"]
    net = build_on_meta("resenc_unet_l", 3, strides=ANISO_STRIDES[1:], kernel_sizes=ANISO_KERNELS)
    assert count_parameters(net) == n - 3 * (65 + 129 + 257 + 321)  # heads of decoder stages 1-4 not built
    assert net.multiple == (8, 32, 32) and net.min_size == 16  # 2 bottleneck voxels along the least pooled axis
    assert net.net.stem.conv.kernel_size == (1, 3, 3) and net.net.stages[1][0].conv1.conv.stride == (1, 2, 2)
    assert net.net.up[0].conv.kernel_size == net.net.up[0].conv.stride == (1, 2, 2)  # transposed conv: kernel = stride
    net = create_model("resenc_unet_l", 3, 1, 3, strides=ANISO_STRIDES[1:], kernel_sizes=ANISO_KERNELS, base_features=2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 5, 33, 20)).shape == (1, 3, 5, 33, 20)


def test_residual_block_is_resnet_d() -> None:
    """The block's output recomputed with torch.nn.functional: conv-IN-lReLU-conv-IN + avgpool→1×1 conv→IN, lReLU."""
    torch.manual_seed(0)
    blk = ResidualBlockD(3, 4, 6, (3, 3, 3), (2, 2, 2))
    for p in blk.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(2, 4, 6, 8, 10)

    def cin(t: torch.Tensor, unit: torch.nn.Module) -> torch.Tensor:  # MONAI Convolution: conv → instance norm
        n = unit.adn.N
        return F.instance_norm(F.conv3d(t, unit.conv.weight, unit.conv.bias, stride=unit.conv.stride, padding=1), weight=n.weight, bias=n.bias, eps=1e-5)

    h = F.leaky_relu(cin(x, blk.conv1), 0.01)
    h = cin(h, blk.conv2)
    proj = blk.skip[1]
    s = F.instance_norm(F.conv3d(F.avg_pool3d(x, 2), proj.conv.weight), weight=proj.adn.N.weight, bias=proj.adn.N.bias, eps=1e-5)
    assert proj.conv.bias is None
    torch.testing.assert_close(blk(x), F.leaky_relu(h + s, 0.01))
    same = ResidualBlockD(3, 6, 6, (3, 3, 3), (1, 1, 1))
    assert len(same.skip) == 0  # identity skip


def test_resenc_blocks_start_as_their_skip() -> None:
    """nnU-Net's initialisation: the last norm of each block is zero, so a block starts as lReLU(skip(x))."""
    torch.manual_seed(0)
    net = create_model("resenc_unet_m", 2, 1, 2, n_stages=3, base_features=4).net
    blk = net.stages[1][0]
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(blk(x), F.leaky_relu(blk.skip(x), 0.01))
    w = net.stages[2][1].conv1.conv.weight  # He normal, slope 0.01: std = sqrt(2 / (1 + 0.01²) / fan_in)
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2 / (1 + 1e-4) / (16 * 9)), rel=0.1)


def test_resenc_reproduces_nnunets_outputs() -> None:
    """Reference values from nnU-Net's ResidualEncoderUNet (dynamic_network_architectures 0.4.4): 2D, widths
    (4, 8, 16), strides 1/2/2, 2 input channels, 2 classes, deep supervision; every parameter set to
    0.3·sin(0.37·i + k) (i: element, k: parameter index in the order stem, encoder, transposed convs, decoder
    convs, heads from full resolution down); the second head upsampled bilinearly to the input size."""
    net = create_model("resenc_unet_m", 2, 2, 2, n_stages=3, base_features=4, n_deep_supervision=1).train()
    n, k = net.net, 0
    with torch.no_grad():
        for group in (n.stem, n.stages, n.up, n.merge, *n.heads):
            for p in group.parameters():
                p.copy_(0.3 * torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.37 + k).reshape(p.shape).float())
                k += 1
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(16.0), indexing="ij")
    x = torch.stack([torch.sin(0.5 * xx + 0.3 * yy), torch.cos(0.2 * xx * yy / 7)])[None]
    with torch.no_grad():
        out = net(x)
    expected = [
        (-85.07819654047489, 20.142473983811904, [-0.2439, -0.16861, -0.24421]),
        (104.34007406234741, 66.0840051367059, [0.55397, -0.02054, 0.58058]),
    ]
    for o, (total, squares, values) in zip(out, expected, strict=True):
        assert float(o.double().sum()) == pytest.approx(total, rel=1e-4)
        assert float(o.double().square().sum()) == pytest.approx(squares, rel=1e-4)
        assert [float(o[0, c, i, j]) for c, i, j in ((0, 0, 0), (1, 2, 3), (0, 5, 6))] == pytest.approx(values, abs=1e-4)


def test_resenc_equals_nnunets_network() -> None:
    """Same weights, same outputs as nnU-Net's own ResidualEncoderUNet (where it is installed)."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    torch.manual_seed(0)
    ref = unet.ResidualEncoderUNet(
        2, 4, [32, 64, 128, 256], torch.nn.Conv3d, [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2]],
        (1, 3, 4, 6), 3, (1, 1, 1), conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True,
    )  # fmt: skip
    ours = create_model("resenc_unet_l", 3, 2, 3, strides=[[1, 2, 2], [2, 2, 2], [1, 2, 2]], kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3, n_deep_supervision=2)
    e, d, n = ref.encoder, ref.decoder, ours.net
    ref_groups = [e.stem, e.stages, d.transpconvs, d.stages, *reversed(d.seg_layers)]
    our_groups = [n.stem, n.stages, n.up, n.merge, *n.heads]
    with torch.no_grad():
        for a, b in zip(ref_groups, our_groups, strict=True):
            for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
                pb.copy_(torch.randn_like(pb) * 0.1)
                pa.copy_(pb)
    x = torch.randn(2, 2, 8, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x)[0])
    r, o = ref.train()(x), ours.train()(x)
    for a, b in zip(r, o, strict=True):
        torch.testing.assert_close(b, resize_to(a, x.shape[2:]))


# ----------------------------------------------------------------------------- MedNeXt
@pytest.mark.parametrize("size", ["s", "b", "m", "l"])
def test_mednext_sizes_match_monais_factory(size: str) -> None:
    from monai.networks.nets.mednext import create_mednext

    for dims in (2, 3):
        for k in (3, 5):
            with torch.device("meta"):
                ref = count_parameters(create_mednext(size.upper(), dims, 1, 3, kernel_size=k))
                ref_ds = count_parameters(create_mednext(size.upper(), dims, 1, 3, kernel_size=k, deep_supervision=True))
            assert reference_parameters(f"mednext_{size}", dims, kernel_size=k) == ref
            assert reference_parameters(f"mednext_{size}", dims, kernel_size=k, n_deep_supervision=4) == ref_ds


def test_mednext_is_monais_network_with_heads_at_input_size() -> None:
    from monai.networks.nets.mednext import create_mednext

    torch.manual_seed(0)
    ours = create_model("mednext_s", 2, 1, 3, kernel_size=5, n_deep_supervision=2)
    ref = create_mednext("S", 2, 1, 3, kernel_size=5, deep_supervision=True)
    ref.load_state_dict(ours.net.net.state_dict())
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
        out, r = ours.train()(x), ref.train()(x)
    assert len(out) == 3 and [tuple(h.shape[2:]) for h in r[:3]] == [(32, 48), (16, 24), (8, 12)]
    for o, h in zip(out, r[:3], strict=False):
        torch.testing.assert_close(o, resize_to(h, (32, 48)))


# ----------------------------------------------------------------------------- SegResNet
def test_segresnet_is_auto3dsegs_network() -> None:
    """Auto3DSeg's hyper_parameters.yaml network: SegResNetDS(init_filters=32, blocks_down=[1,2,2,4,4], norm INSTANCE, dsdepth=4)."""
    from monai.networks.nets import SegResNetDS

    for dims in (2, 3):
        with torch.device("meta"):
            ref = count_parameters(SegResNetDS(dims, 32, 1, 3, norm="INSTANCE", blocks_down=[1, 2, 2, 4, 4], dsdepth=4))
        assert reference_parameters("segresnet", dims, n_deep_supervision=3) == ref
    torch.manual_seed(0)
    ours = create_model("segresnet", 3, 1, 3, init_filters=8, resolution=(6.0, 1.5, 1.5), n_deep_supervision=3)
    ref = SegResNetDS(3, 8, 1, 3, norm="INSTANCE", blocks_down=[1, 2, 2, 4, 4], dsdepth=4, resolution=(6.0, 1.5, 1.5))
    ref.load_state_dict(ours.net.net.state_dict())
    assert ours.multiple == (4, 16, 16)  # anisotropic first levels: the slice axis is pooled twice
    x = torch.randn(2, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))
        out, r = ours.train()(x), ref.train()(x)
    assert len(out) == len(r) == 4
    for o, h in zip(out, r, strict=True):
        torch.testing.assert_close(o, resize_to(h, x.shape[2:]))


# ----------------------------------------------------------------------------- all three
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    ("name", "kwargs", "n_heads"),
    [
        ("resenc_unet_m", {"n_stages": 4, "base_features": 4, "n_deep_supervision": 2}, 3),
        ("mednext_b", {"init_filters": 4, "kernel_size": 5, "n_deep_supervision": 4}, 5),
        ("segresnet", {"init_filters": 4, "blocks_down": (1, 2, 2, 4), "n_deep_supervision": 2}, 3),
        ("segresnet", {"init_filters": 4, "blocks_down": (1, 2, 2, 4)}, 1),
    ],
)
def test_deep_supervision_heads_at_the_input_size(name: str, kwargs: dict, n_heads: int, dims: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, dims, 2, 3, **kwargs).train()
    size = (19, 27) if dims == 2 else (13, 17, 11)
    out = model(torch.randn(2, 2, *size))
    outs = out if isinstance(out, list) else [out]
    assert len(outs) == n_heads and all(o.shape == (2, 3, *size) for o in outs)
    assert len({float(o.abs().sum()) for o in outs}) == n_heads  # distinct heads, not copies
    with torch.no_grad():
        assert isinstance(model.eval()(torch.randn(1, 2, *size)), torch.Tensor)


def test_the_new_models_are_registered_with_their_papers() -> None:
    for name in NEW:
        meta = MODELS.meta(name)
        assert meta["dims"] == (2, 3) and meta["deep_supervision"]
    assert "Isensee et al. 2024" in MODELS.meta("resenc_unet_l")["paper"]
    assert "Roy et al. 2023" in MODELS.meta("mednext_l")["paper"]
    assert "Myronenko 2018" in MODELS.meta("segresnet")["paper"]


def test_cli_lists_the_new_models() -> None:
    from typer.testing import CliRunner

    from medseg.cli import app

    res = CliRunner().invoke(app, ["models", "--dims", "3"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    for name in NEW:
        assert name in res.output
    assert "102.3 M" in res.output  # ResEnc, 3D, 6 stages, one head
    res = CliRunner().invoke(app, ["models", "mednext_l"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "kernel_size" in res.output and "Roy et al. 2023" in res.output


@pytest.mark.parametrize(
    ("name", "dims", "kwargs", "match"),
    [
        ("resenc_unet_m", 3, {"n_stages": 4, "strides": [2, 2]}, r"n_stages=4 but 2 strides give 3 stages"),
        ("resenc_unet_m", 3, {"n_stages": 1}, r"n_stages must be between 2 and 13, got 1"),
        ("resenc_unet_l", 3, {"n_stages": 3, "kernel_sizes": [3, 3]}, r"kernel_sizes has 2 entries for 3 stages"),
        ("resenc_unet_l", 3, {"n_stages": 3, "kernel_sizes": [3, 4, 3]}, r"kernel sizes must be odd"),
        ("resenc_unet_l", 2, {"strides": [[2, 2, 2]]}, r"strides entries must be an int or 2 positive ints"),
        ("resenc_unet_m", 2, {"n_stages": 3, "n_deep_supervision": 2}, r"n_deep_supervision must be between 0 and 1 for 3 stages"),
        ("mednext_m", 3, {"kernel_size": 4}, r"kernel_size must be an odd integer"),
        ("mednext_s", 2, {"n_deep_supervision": 5}, r"n_deep_supervision must be between 0 and 4"),
        ("segresnet", 3, {"n_deep_supervision": 4}, r"n_deep_supervision must be between 0 and 3 for 5 levels"),
        ("segresnet", 3, {"resolution": (1.0, 1.0)}, r"resolution must be 3 positive spacings"),
        ("segresnet", 3, {"blocks_down": ()}, r"blocks_down must list at least one level"),
    ],
)
def test_bad_parameters_are_one_line_model_errors(name: str, dims: int, kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match) as e:
        create_model(name, dims, 1, 2, **kwargs)
    assert "\n" not in str(e.value) and "model.params." in str(e.value)
