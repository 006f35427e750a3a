"""The demo under load and hostile uploads: pictures handed to gradio as files (no cache file rewritten while it
is downloaded), bounded upload views, zip bombs refused before extraction, no server paths in messages."""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from medseg.demo.runs import DemoError
from medseg.demo.served import Served
from medseg.demo.uploads import read_upload

gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.config import config_from_dict
    from medseg.engine.train import train

    root = tmp_path_factory.mktemp("demo-hardening")
    cfg = config_from_dict(
        {
            "name": "unet2d",
            # a 2D network trained on slices of volumes: the demo predicts uploaded volumes with it
            "data": {"dataset": "phantom3d", "builtin": {"n_patients": 4, "size": 32, "depth": 6}, "slices": True, "batch_size": 4, "cache_dir": str(root)},
            "model": {"name": "unet", "params": {"channels": [8, 16], "num_res_units": 0}},
            "train": {"epochs": 1, "device": "cpu", "iterations_per_epoch": None},
        }
    )
    train(cfg, root / "runs" / "unet2d", progress=False)
    return root / "runs"


def handler(blocks: Any, name: str) -> Any:
    return next(f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == name)


def _volume(path: Path, seed: int = 0) -> Path:
    vol = np.random.default_rng(seed).normal(100, 30, size=(24, 20, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.9, 3.0, 1.0])), str(path))
    return path


# ---------------------------------------------------------------- concurrent identical uploads


def _race(make_output: Any, seconds: float = 1.5) -> tuple[int, int]:
    """Recompute one identical picture output again and again while another thread downloads gradio's cached copy.

    Returns (downloads, downloads whose body length differed from the size read first, as a
    Content-Length header is).
    """
    from gradio.processing_utils import move_files_to_cache

    img = gr.Image(format="png")
    cached = move_files_to_cache(img.postprocess(make_output()), img, postprocess=True)
    path = cached["path"] if isinstance(cached, dict) else cached.path
    stop = time.monotonic() + seconds
    bad = [0, 0]

    def download() -> None:
        while time.monotonic() < stop:
            declared = os.stat(path).st_size
            with open(path, "rb") as fh:
                body = fh.read()
            bad[0] += 1
            bad[1] += len(body) != declared

    t = threading.Thread(target=download)
    t.start()
    while time.monotonic() < stop:
        move_files_to_cache(img.postprocess(make_output()), img, postprocess=True)
    t.join()
    return bad[0], bad[1]


def test_identical_pictures_never_rewrite_a_file_being_downloaded(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, size=(256, 256, 3), dtype=np.uint8)
    served = Served(tmp_path / "out")
    downloads, short = _race(lambda: served.picture(rgb))
    assert downloads > 20 and short == 0, (downloads, short)
    # the cause, shown by the same harness: an array output is written in place under its content's name
    downloads, short = _race(lambda: rgb)
    assert short > 0, "gradio no longer rewrites cached array pictures in place: Served.picture could hand arrays again"


def test_handlers_give_gradio_files_and_keep_only_a_token(runs_dir: Path, tmp_path: Path) -> None:
    from medseg.demo import build_app

    blocks = build_app(runs_dir)
    served: Served = blocks.medseg_served
    predict = handler(blocks, "do_predict")
    out = predict(str(_volume(tmp_path / "scan.nii.gz")), "unet2d", 0.5, progress=lambda *a, **k: None)
    picture, mask, msg, token, _ = out
    assert isinstance(picture, str) and Path(picture).is_file() and Path(picture).suffix == ".png"
    assert "Predicted" in msg and Path(mask).is_file()
    assert isinstance(token, str) and served.recall(token)["pred"].dtype == np.uint8  # the session holds a token only
    again = handler(blocks, "show_upload")(token, 1, 0.3)
    assert isinstance(again, str) and Path(again).is_file()
    assert handler(blocks, "show_upload")("unknown-token", 1, 0.3) is None
    assert blocks.state_session_capacity == 200 and blocks.delete_cache == (600, 3600)
    render = handler(blocks, "do_render")
    case = blocks.medseg.runs.get("unet2d").case_ids[0]
    pic, metrics, _ = render("unet2d", None, case, "axial", 0, "auto (1–99 %)", 0.5, None, "side by side")
    assert isinstance(pic, str) and Path(pic).is_file() and "unet2d" in metrics


def test_upload_views_live_on_disk_not_in_memory(tmp_path: Path) -> None:
    served = Served(tmp_path)
    image = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    view = {"image": image, "pred": (image > 0).astype(np.uint8), "affine": np.diag([0.8, 0.9, 2.5, 1.0]), "spacing": (0.8, 0.9, 2.5)}
    token = served.remember({**view, "colors": [(255, 0, 0)], "classes": [np.int64(1)], "multi": False})
    back = served.recall(token)
    assert isinstance(back["image"], np.memmap) and isinstance(back["pred"], np.memmap)  # read slice by slice, never held
    np.testing.assert_array_equal(back["image"], image)
    np.testing.assert_array_equal(back["pred"], view["pred"])
    np.testing.assert_array_equal(back["affine"], view["affine"])
    assert back["spacing"] == [0.8, 0.9, 2.5] and back["colors"] == [(255, 0, 0)] and back["classes"] == [1] and back["multi"] is False
    for bad in (None, "../views", "x" * 24, token.upper(), f"{token}/../{token}"):
        assert served.recall(bad) is None
    assert served.recall(served.remember({"image": image})) is not None


def test_old_pictures_views_and_masks_are_pruned(tmp_path: Path) -> None:
    served = Served(tmp_path, max_age_s=60)
    old = Path(served.picture(np.zeros((4, 4, 3), np.uint8)))
    mask_dir = tmp_path / "mask-abc"
    mask_dir.mkdir()
    (mask_dir / "x_mask.nii.gz").write_bytes(b"x")
    view = served.views / served.remember({"image": np.zeros((2, 2), np.float32)})
    for p in (old, mask_dir, view):
        os.utime(p, (time.time() - 120,) * 2)
    fresh = Path(served.picture(np.ones((4, 4, 3), np.uint8)))
    assert served.prune(force=True) == 3 and not old.exists() and not mask_dir.exists() and not view.exists() and fresh.exists()


# ---------------------------------------------------------------- hostile uploads


def _zip(path: Path, members: dict[str, bytes | int]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            if isinstance(content, int):  # that many MiB of zeros
                with zf.open(name, "w", force_zip64=True) as fh:
                    for _ in range(content):
                        fh.write(bytes(2**20))
            else:
                zf.writestr(name, content)
    return path


def test_zip_bomb_upload_is_refused_before_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    bomb = _zip(tmp_path / "bomb.zip", {"series/IM1.dcm": 80})
    t0 = time.perf_counter()
    with pytest.raises(DemoError, match="zip bomb") as e:
        read_upload(bomb, max_bytes=64 * 2**20)
    assert time.perf_counter() - t0 < 2 and "bomb.zip" in str(e.value) and str(tmp_path) not in str(e.value)
    rng = np.random.default_rng(0)
    members = {f"s/{i}.dcm": rng.choice(np.frombuffer(b"AB", np.uint8), 300_000).tobytes() for i in range(6)}  # compresses about 7×
    big = _zip(tmp_path / "big.zip", members)
    assert big.stat().st_size < 400 * 1024
    with pytest.raises(DemoError, match=r"expands to 1\.7 MB, more than the limit of 1\.6 MB"):
        read_upload(big, max_bytes=400 * 1024)  # expansion limit: 4 × the upload limit
    import medseg.demo.uploads as U

    monkeypatch.setattr(U, "MAX_EXPANDED_BYTES", 2**20)  # whatever the upload limit, memory stays bounded (1 GB by default)
    with pytest.raises(DemoError, match=r"expands to 1\.7 MB, more than the limit of 1\.0 MB"):
        read_upload(big, max_bytes=512 * 2**20)
    assert list(private.iterdir()) == []


def test_messages_name_the_upload_not_server_paths(runs_dir: Path, tmp_path: Path) -> None:
    from helpers import write_series
    from medseg.demo import build_app

    blocks = build_app(runs_dir)
    predict = handler(blocks, "do_predict")
    upload_dir = Path(tempfile.mkdtemp(prefix="gradio-upload-"))  # where a server keeps uploads
    try:
        (upload_dir / "scan.nii.gz").write_bytes(b"this is not gzip")
        write_series(tmp_path / "s", n=4)
        files = sorted((tmp_path / "s").iterdir())
        files[1].write_bytes(files[1].read_bytes()[:-10])
        _zip(upload_dir / "ct.zip", {f"ct/{p.name}": p.read_bytes() for p in files})
        for name, expected in (("scan.nii.gz", "scan.nii.gz"), ("ct.zip", f"ct.zip:ct/{files[1].name}")):
            out = predict(str(upload_dir / name), "unet2d", 0.5, progress=lambda *a, **k: None)
            msg = out[2]
            assert expected in msg and str(upload_dir) not in msg and tempfile.gettempdir() + "/" not in msg, msg
    finally:
        import shutil

        shutil.rmtree(upload_dir)


def test_zip_upload_of_odd_names_and_bytes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../../x.dcm", b"\0" * 300)
        zf.writestr("/abs.dcm", b"DICM")
    (tmp_path / "odd.zip").write_bytes(buf.getvalue())
    with pytest.raises(DemoError, match="not a DICOM file") as e:
        read_upload(tmp_path / "odd.zip")
    assert str(e.value).startswith("odd.zip:") and str(tmp_path) not in str(e.value)  # named after a member, never a server path
    assert not (tmp_path.parent.parent / "x.dcm").exists() and not (tmp_path.parent / "x.dcm").exists()
