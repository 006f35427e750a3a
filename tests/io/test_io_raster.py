"""PNG, TIFF, BMP and JPEG: reading checked against Pillow's own reading of the file, masks and their value convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.core.errors import FormatError, MedsegError
from medseg.io import read_image, read_label, write_mask

H, W = 31, 23  # odd, not square: a transposed picture changes shape


def _grey(seed: int = 0, dtype: type = np.uint8, top: int = 255) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, top, size=(H, W)).astype(dtype)


@pytest.mark.parametrize(
    ("name", "array"), [("g.png", _grey()), ("g16.png", _grey(1, np.uint16, 60000)), ("g.bmp", _grey(2)), ("g16.tif", _grey(3, np.uint16, 4000))]
)
def test_grey_pictures_keep_their_values_and_size(tmp_path: Path, name: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(tmp_path / name)
    case, source = read_image(tmp_path / name)
    with Image.open(tmp_path / name) as im:
        expected = np.asarray(im)
    assert case.image.shape == (1, H, W) and source.shape == (H, W)
    np.testing.assert_array_equal(case.image[0], expected.astype(np.float32))
    np.testing.assert_array_equal(case.affine, np.eye(3))


def test_float_tiff_and_rgb_and_rgba(tmp_path: Path) -> None:
    f = np.random.default_rng(4).normal(size=(H, W)).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    case, _ = read_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(case.image[0], f)
    rgba = np.random.default_rng(5).integers(0, 255, size=(H, W, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "c.png")
    case, _ = read_image(tmp_path / "c.png")
    assert case.image.shape == (3, H, W)
    np.testing.assert_array_equal(np.moveaxis(case.image, 0, -1), rgba[..., :3])


def test_multi_page_tiff_is_a_volume_not_page_one(tmp_path: Path) -> None:
    pages = [_grey(i, np.uint16, 3000) for i in range(4)]
    ims = [Image.fromarray(p) for p in pages]
    ims[0].save(tmp_path / "stack.tif", save_all=True, append_images=ims[1:])
    case, source = read_image(tmp_path / "stack.tif")
    assert case.spatial_shape == (4, H, W) and source.pages
    with Image.open(tmp_path / "stack.tif") as im:  # Pillow's own reading, page by page
        for i in range(4):
            im.seek(i)
            np.testing.assert_array_equal(case.image[0, i], np.asarray(im).astype(np.float32))
    mask = (case.image[0] > 1500).astype(np.uint8)
    out = write_mask(mask, source, tmp_path / "p")
    with Image.open(out) as im:
        assert im.n_frames == 4
        for i in range(4):
            im.seek(i)
            np.testing.assert_array_equal(np.asarray(im), mask[i])
    with pytest.raises(MedsegError, match="holds one 2D picture"):
        write_mask(mask, source, tmp_path / "q", fmt="png")


def test_pages_of_different_sizes_are_refused(tmp_path: Path) -> None:
    a, b = Image.fromarray(_grey(0)), Image.fromarray(_grey(1)[:20])
    a.save(tmp_path / "odd.tif", save_all=True, append_images=[b])
    with pytest.raises(FormatError, match="pages differ") as e:
        read_image(tmp_path / "odd.tif")
    assert "odd.tif" in str(e.value)


@pytest.mark.parametrize(("top", "dtype"), [(255, np.uint8), (65535, np.uint16)])
def test_binary_full_intensity_masks_read_as_0_1(tmp_path: Path, top: int, dtype: type) -> None:
    m = np.zeros((H, W), dtype)
    m[3:20, 4:9] = top
    Image.fromarray(m).save(tmp_path / "m.png")
    lab, _, source = read_label(tmp_path / "m.png")
    np.testing.assert_array_equal(lab, (m == top).astype(np.uint8))
    assert source.values == [0, top]


def test_palette_mask_keeps_its_indices_and_colour_mask_is_refused(tmp_path: Path) -> None:
    idx = np.random.default_rng(7).integers(0, 4, size=(H, W)).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    im.save(tmp_path / "pal.png")
    lab, _, source = read_label(tmp_path / "pal.png")
    np.testing.assert_array_equal(lab, idx)
    assert source.values is None
    colour = np.zeros((H, W, 3), np.uint8)
    colour[2, 2] = (0, 255, 0)
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(FormatError, match="colour") as e:
        read_label(tmp_path / "c.png")
    assert "c.png" in str(e.value)


@pytest.mark.parametrize(("values", "expected_top"), [(None, 2), ([0, 255], 255), ([0, 65535], 65535)])
def test_masks_are_written_with_the_stored_values(tmp_path: Path, values: list[int] | None, expected_top: int) -> None:
    Image.fromarray(_grey()).save(tmp_path / "s.png")
    _, source = read_image(tmp_path / "s.png")
    mask = np.zeros((H, W), np.uint8)
    mask[5:9, 2:20] = 1
    if values is None:
        mask[10:12, 1:3] = 2
    out = write_mask(mask, source, tmp_path / "p", values=values)
    assert out.name == "s.png"
    with Image.open(out) as im:
        got = np.asarray(im)
    assert got.shape == (H, W) and int(got.max()) == expected_top
    np.testing.assert_array_equal(got, mask if values is None else mask.astype(np.int64) * expected_top)


def test_jpeg_input_gets_a_png_mask_and_bmp_refuses_16_bit(tmp_path: Path) -> None:
    Image.fromarray(_grey()).save(tmp_path / "photo.jpg")
    case, source = read_image(tmp_path / "photo.jpg")
    assert write_mask(np.zeros(case.spatial_shape, np.uint8), source, tmp_path / "p").name == "photo.png"
    Image.fromarray(_grey()).save(tmp_path / "b.bmp")
    _, source = read_image(tmp_path / "b.bmp")
    with pytest.raises(FormatError, match="more than a BMP holds"):
        write_mask(np.ones((H, W), np.uint8), source, tmp_path / "q", values=[0, 65535])
    assert not list((tmp_path / "q").glob("*.bmp")) if (tmp_path / "q").exists() else True


def test_broken_picture_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(FormatError, match="cannot read image") as e:
        read_image(tmp_path / "x.png")
    assert "x.png" in str(e.value) and "\n" not in str(e.value)


def test_nnunet_channel_files_are_one_case_named_like_nnunet_names_predictions(tmp_path: Path) -> None:
    """An nnU-Net ``imagesTs`` folder: ``x_0000.png`` + ``x_0001.png`` are the two channels of case ``x``."""
    from medseg.io import read_images

    for case, seed in (("cell_a", 0), ("cell_b", 5)):
        for ch in range(2):
            Image.fromarray(_grey(seed + ch)).save(tmp_path / f"{case}_{ch:04d}.png")
    read = {c.case_id: (c, s) for c, s in read_images(tmp_path)}
    assert sorted(read) == ["cell_a", "cell_b"]
    case, source = read["cell_b"]
    assert case.image.shape == (2, H, W) and source.name == "cell_b" and source.file_name("png") == "cell_b.png"
    np.testing.assert_array_equal(case.image[1], _grey(6).astype(np.float32))


@pytest.mark.parametrize("fault", ["gap", "uneven", "grid"])
def test_nnunet_channel_files_that_do_not_fit_are_refused(tmp_path: Path, fault: str) -> None:
    from medseg.io import read_images

    Image.fromarray(_grey()).save(tmp_path / "a_0000.png")
    Image.fromarray(_grey()).save(tmp_path / "b_0000.png")
    if fault == "gap":
        Image.fromarray(_grey()).save(tmp_path / "a_0002.png")
    elif fault == "uneven":
        Image.fromarray(_grey()).save(tmp_path / "a_0001.png")
    else:
        Image.fromarray(_grey()).save(tmp_path / "b_0001.png")
        Image.fromarray(_grey()[:, :-1]).save(tmp_path / "a_0001.png")
    with pytest.raises(FormatError) as e:
        list(read_images(tmp_path))
    assert "a_000" in str(e.value) and ("channel" in str(e.value))


def test_a_folder_with_some_other_names_is_read_file_by_file(tmp_path: Path) -> None:
    from medseg.io import read_images

    Image.fromarray(_grey()).save(tmp_path / "a_0000.png")
    Image.fromarray(_grey()).save(tmp_path / "scan.png")
    assert sorted(c.case_id for c, _ in read_images(tmp_path)) == ["a_0000", "scan"]
