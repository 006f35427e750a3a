"""Pretrained weights from local files: round trips, adaptation, reports and refusals."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torchvision

from medseg.core.errors import ModelError
from medseg.models import MODELS, create_model, load_pretrained, read_state_dict, save_weights
from medseg.models.pretrained import adapt_input_channels
from medseg.models.wrappers import ReplicateChannels

SMP_TINY = {"encoder_depth": 3, "decoder_channels": (16, 8, 4)}
SEG_TINY = MODELS.meta("segformer_b0")["tiny"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_round_trip_other_class_count_and_one_channel(tmp_path: pathlib.Path) -> None:
    """Save a random 3-channel 5-class model; load into a 1-channel 2-class one."""
    torch.manual_seed(0)
    src = create_model("unet_resnet18", 2, 3, 5, **SMP_TINY)
    path = save_weights(src, tmp_path / "w.safetensors")
    dst = create_model("unet_resnet18", 2, 1, 2, **SMP_TINY, pretrained=str(path))
    report = dst.pretrained_report
    s, d = src.state_dict(), dst.state_dict()
    first, head = "net.encoder.conv1.weight", "net.segmentation_head.0.weight"
    assert report.mapping == "'' → ''"
    assert set(report.loaded) == set(s) - {first, head, "net.segmentation_head.0.bias"}
    for k in report.loaded:
        assert torch.equal(s[k], d[k]), k
    assert list(report.adapted) == [first]
    assert torch.allclose(d[first], s[first].sum(1, keepdim=True))
    assert set(report.ignored) == {head, "net.segmentation_head.0.bias"}
    assert "shape" in report.ignored[head]
    assert set(report.missing) == {head, "net.segmentation_head.0.bias"}
    assert "loaded" in report.summary() and report.to_dict()["source"] == str(path)
    assert dst(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


@pytest.mark.parametrize("name", ["attention_unet", "dense_unet", "improved_unet3d"])
def test_round_trip_own_architectures(tmp_path: pathlib.Path, name: str) -> None:
    meta = MODELS.meta(name)
    dims = meta["dims"][-1]
    src = create_model(name, dims, 3, 4, **meta["tiny"])
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = create_model(name, dims, 1, 2, **meta["tiny"], pretrained=tmp_path / "w.pt")
    r = dst.pretrained_report
    assert len(r.adapted) == 1 and r.missing and set(r.missing) == set(r.ignored)
    s, d = src.state_dict(), dst.state_dict()
    assert all(torch.equal(s[k], d[k]) for k in r.loaded)


def test_torchvision_resnet_into_smp_encoder(tmp_path: pathlib.Path) -> None:
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    model = create_model("linknet_resnet18", 2, 1, 3, pretrained=tmp_path / "resnet18.pth")
    r = model.pretrained_report
    assert r.mapping == "'' → 'net.encoder.'"
    assert set(r.ignored) == {"fc.weight", "fc.bias"}
    assert torch.equal(model.state_dict()["net.encoder.layer4.1.conv2.weight"], tv.state_dict()["layer4.1.conv2.weight"])
    assert torch.allclose(model.state_dict()["net.encoder.conv1.weight"], tv.conv1.weight.sum(1, keepdim=True))
    assert all(k.startswith("net.decoder") or k.startswith("net.segmentation_head") for k in r.missing)


def test_lightning_style_checkpoint_is_unwrapped(tmp_path: pathlib.Path) -> None:
    src = create_model("unet", 2, 1, 2, channels=(4, 8))
    torch.save({"epoch": 3, "state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "best.ckpt")
    dst = create_model("unet", 2, 1, 2, channels=(4, 8), pretrained=tmp_path / "best.ckpt")
    assert dst.pretrained_report.mapping == "'net.' → ''"
    assert not dst.pretrained_report.missing and not dst.pretrained_report.ignored


def _hf_segformer(folder: pathlib.Path, num_labels: int = 150) -> dict[str, torch.Tensor]:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(
        hidden_sizes=list(SEG_TINY["hidden_sizes"]), depths=list(SEG_TINY["depths"]), decoder_hidden_size=SEG_TINY["decoder_hidden_size"], num_labels=num_labels
    )
    hf = SegformerForSemanticSegmentation(cfg)
    hf.save_pretrained(folder)  # config.json + model.safetensors, as on the hub
    return hf.state_dict()


def test_segformer_from_a_hugging_face_folder(tmp_path: pathlib.Path) -> None:
    sd = _hf_segformer(tmp_path / "segformer")
    model = create_model("segformer_b0", 2, 1, 3, **SEG_TINY, pretrained=tmp_path / "segformer")
    r = model.pretrained_report
    assert r.mapping == "'' → 'net.model.'"
    assert set(r.ignored) == {"decode_head.classifier.weight", "decode_head.classifier.bias"}
    assert list(r.adapted) == ["net.model.segformer.stages.0.patch_embeddings.proj.weight"]
    mine = model.state_dict()
    for k in r.loaded:
        assert torch.equal(mine[k], sd[k.removeprefix("net.model.")])
    out = model(torch.randn(1, 1, 40, 50))
    assert out.shape == (1, 3, 40, 50)


def test_replicate_grayscale_keeps_rgb_first_conv(tmp_path: pathlib.Path) -> None:
    sd = _hf_segformer(tmp_path / "segformer")
    model = create_model("segformer_b0", 2, 1, 3, **SEG_TINY, pretrained=tmp_path / "segformer", pretrained_channels="replicate")
    assert isinstance(model.net, ReplicateChannels) and model.in_channels == 1
    assert not model.pretrained_report.adapted
    key = "segformer.stages.0.patch_embeddings.proj.weight"
    assert torch.equal(model.state_dict()[f"net.net.model.{key}"], sd[key])
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ModelError, match="repeats a 1-channel image"):
        create_model("segformer_b0", 2, 2, 3, **SEG_TINY, pretrained=tmp_path / "segformer", pretrained_channels="replicate")


def test_fcn_convolutionalises_torchvision_classifier(tmp_path: pathlib.Path) -> None:
    """A torchvision-VGG-shaped state dict (narrow fc layers to stay small): fc6/fc7 come from classifier.0/.3."""
    src = create_model("fcn8s", 2, 3, 21, fc_channels=16).net
    sd = {k: v for k, v in src.state_dict().items() if k.startswith("features.")}
    sd["classifier.0.weight"] = torch.randn(16, 512 * 7 * 7)
    sd["classifier.0.bias"] = torch.randn(16)
    sd["classifier.3.weight"] = torch.randn(16, 16)
    sd["classifier.3.bias"] = torch.randn(16)
    sd["classifier.6.weight"] = torch.randn(1000, 16)
    sd["classifier.6.bias"] = torch.randn(1000)
    torch.save(sd, tmp_path / "vgg16.pth")
    model = create_model("fcn8s", 2, 1, 2, fc_channels=16, pretrained=tmp_path / "vgg16.pth")
    r = model.pretrained_report
    assert "net.fc6.weight" in r.adapted and "net.fc7.weight" in r.adapted
    assert torch.equal(model.state_dict()["net.fc6.weight"], sd["classifier.0.weight"].reshape(16, 512, 7, 7))
    assert set(r.ignored) == {"classifier.6.weight", "classifier.6.bias"}


def test_adapt_input_channels_rules() -> None:
    w = torch.randn(8, 3, 3, 3)
    assert torch.allclose(adapt_input_channels(w, 1), w.sum(1, keepdim=True))
    w4 = adapt_input_channels(w, 4)
    assert w4.shape == (8, 4, 3, 3) and torch.allclose(w4[:, 3], w[:, 0] * 3 / 4)


# ----------------------------------------------------------------------------- refusals
def test_missing_path_says_where_to_put_the_weights(tmp_path: pathlib.Path) -> None:
    where = tmp_path / "weights" / "mit-b2"
    with pytest.raises(ModelError) as e:
        create_model("segformer_b2", 2, 1, 3, pretrained=where)
    msg = str(e.value)
    assert "\n" not in msg and str(where) in msg and "nvidia/mit-b2" in msg and "put the weights at" in msg


def test_corrupt_files_are_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    model = create_model("unet", 2, 1, 2, channels=(4, 8))
    save_weights(model, tmp_path / "ok.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "ok.safetensors").read_bytes()[:200])
    torch.save(model.state_dict(), tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:300])
    for name in ("junk.pt", "cut.safetensors", "cut.pt"):
        with pytest.raises(ModelError, match="corrupt or unreadable") as e:
            load_pretrained(model, tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)


class _RunsCodeOnLoad:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_needing_code_execution_is_refused(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCodeOnLoad(marker)}, tmp_path / "evil.pth")
    model = create_model("unet", 2, 1, 2, channels=(4, 8))
    with pytest.raises(ModelError, match="would run code on load") as e:
        load_pretrained(model, tmp_path / "evil.pth")
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_weights_of_another_architecture_are_refused(tmp_path: pathlib.Path) -> None:
    save_weights(create_model("unet", 2, 1, 2, channels=(4, 8)), tmp_path / "unet.safetensors")
    with pytest.raises(ModelError, match="weights of another architecture") as e:
        create_model("dense_unet", 2, 1, 2, **MODELS.meta("dense_unet")["tiny"], pretrained=tmp_path / "unet.safetensors")
    assert "\n" not in str(e.value)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ModelError, match="weights of another architecture"):
        create_model("unet_resnet50", 2, 1, 2, pretrained=tmp_path / "r18.pth")


def test_hugging_face_folder_of_another_model_type(tmp_path: pathlib.Path) -> None:
    _hf_segformer(tmp_path / "hf")
    cfg = (tmp_path / "hf" / "config.json").read_text().replace('"model_type": "segformer"', '"model_type": "vit"')
    (tmp_path / "hf" / "config.json").write_text(cfg)
    with pytest.raises(ModelError, match=r"another architecture \('vit'"):
        create_model("segformer_b0", 2, 1, 3, **SEG_TINY, pretrained=tmp_path / "hf")


def test_folder_without_weights(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelError, match="no single weights file"):
        read_state_dict(tmp_path)
