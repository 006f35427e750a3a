"""Property-based fuzzing of the four text parsers: whatever the input, the result is right or a ``MedsegError``.

Parsers: the Kaggle RLE codec, Sunnybrook contour text, MSD / nnU-Net ``dataset.json`` and the CSV case
list. Inputs are random bytes, structured near-valid text and mutations of valid files. Examples per
parser: the ``medseg`` hypothesis profile (1,500; 1,000 for ``dataset.json``, whose examples read volumes),
about 25 s in all; ``MEDSEG_FUZZ=thorough`` (``make test-all``) runs 20,000 (13,333).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medseg.core.errors import MedsegError  # noqa: E402
from medseg.data.formats.csv_paths import read_csv_paths  # noqa: E402
from medseg.data.formats.msd import read_msd  # noqa: E402
from medseg.data.formats.rle import rle_decode, rle_encode  # noqa: E402
from medseg.data.formats.sunnybrook import read_contour  # noqa: E402

# ---------------------------------------------------------------------------- RLE

TOKENS = ["1", "2", "3", "7", "12", "0", "-1", "+2", "²", "١", "1e3", "0x1", "nan", "99999999999999999999999", "9" * 400, "٣", "", "a"]
SEPARATORS = [" ", "  ", "\t", "\n", "\u00a0", "\u2003", ",", "\x00"]


def _is_int(token: str) -> bool:
    body = token[1:] if token[0] in "+-" else token
    return body != "" and all(c in "0123456789" for c in body)


def reference_decode(text: str, h: int, w: int, order: str) -> np.ndarray | None:
    """Decoded by hand, pixel by pixel; ``None`` where the string is not a valid RLE for this size."""
    tokens = text.split()
    if not all(_is_int(t) for t in tokens) or len(tokens) % 2:
        return None
    values = [int(t) for t in tokens]
    flat = [False] * (h * w)
    for start, length in zip(values[0::2], values[1::2], strict=True):
        if start < 1 or length < 1 or start - 1 + length > h * w:
            return None
        for i in range(start - 1, start - 1 + length):
            flat[i] = True
    return np.array(flat, dtype=bool).reshape((h, w), order="C" if order == "row" else "F")


rle_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(TOKENS), max_size=12).flatmap(
        lambda ts: st.lists(st.sampled_from(SEPARATORS), min_size=len(ts), max_size=len(ts)).map(
            lambda seps: "".join(t + s for t, s in zip(ts, seps, strict=True))
        )
    ),
    st.lists(st.integers(-5, 2**70), max_size=10).map(lambda v: " ".join(map(str, v))),
)


@given(text=rle_text, h=st.integers(0, 9), w=st.integers(0, 9), order=st.sampled_from(["row", "column"]))
def test_rle_decode_is_right_or_refuses(text: str, h: int, w: int, order: str) -> None:
    try:
        mask = rle_decode(text, (h, w), order)
    except MedsegError as e:
        assert "\n" not in str(e)
        assert reference_decode(text, h, w, order) is None, f"refused a valid RLE {text!r}: {e}"
        return
    expected = np.zeros((h, w), bool) if not text.strip() else reference_decode(text, h, w, order)
    assert expected is not None, f"accepted an invalid RLE {text!r}"
    np.testing.assert_array_equal(mask, expected)


@settings(max_examples=max(50, settings.default.max_examples // 10))
@given(
    mask=st.integers(1, 8).flatmap(
        lambda h: st.integers(1, 8).flatmap(lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(lambda v: np.array(v).reshape(h, w)))
    ),
    order=st.sampled_from(["row", "column"]),
)
def test_rle_encode_then_decode_gives_the_mask(mask: np.ndarray, order: str) -> None:
    text = rle_encode(mask, order)
    np.testing.assert_array_equal(reference_decode(text, *mask.shape, order), mask)
    np.testing.assert_array_equal(rle_decode(text, mask.shape, order), mask)


# ---------------------------------------------------------------------------- Sunnybrook contours

NUMBERS = ["12", "12.5", "-3", "1e2", "nan", "NaN", "inf", "-inf", "1e400", "0x10", "1_0", "١٢", "", "x", "3,5"]
contour_text = st.one_of(
    st.binary(max_size=200),
    st.lists(st.lists(st.sampled_from(NUMBERS), max_size=3).map(" ".join), max_size=8).map(lambda ls: "\n".join(ls).encode()),
    st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)), max_size=8).map(
        lambda pts: "\n".join(f"{x!r} {y!r}" for x, y in pts).encode()
    ),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@given(data=contour_text)
def test_contour_text_is_right_or_refuses(folder: Path, data: bytes) -> None:
    path = folder / "IM-0001-0001-icontour-manual.txt"
    path.write_bytes(data)
    try:
        pts = read_contour(path)
    except MedsegError as e:
        assert "\n" not in str(e) and path.name in str(e)
        return
    lines = [ln.split() for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    assert pts.shape == (len(lines), 2) and len(lines) >= 3
    assert np.isfinite(pts).all()
    np.testing.assert_array_equal(pts, np.array([[float(a), float(b)] for a, b in lines]))


# ---------------------------------------------------------------------------- MSD dataset.json

KEYS = ["labels", "modality", "channel_names", "training", "image", "label", "file_ending", "name", "0", "1", "00", "01", "background", "x"]
LEAVES = ["", "0", "1", "CT", "./imagesTr/a.nii.gz", ".nii.gz", "a\x00b"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.sampled_from(LEAVES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)
VALID_MSD = {
    "name": "Tiny",
    "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "organ"},
    "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}, {"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"}],
}


def _mutate(draw: st.DrawFn) -> dict:
    meta = json.loads(json.dumps(VALID_MSD))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "labels", "modality", "training", "entry"]))
        key, value = draw(st.sampled_from(KEYS)), draw(json_values)
        if where == "top":
            meta[key] = value
        elif where == "entry":
            entries = [e for e in meta.get("training") or [] if isinstance(e, dict)] if isinstance(meta.get("training"), list) else []
            if entries:
                entries[draw(st.integers(0, len(entries) - 1))][draw(st.sampled_from(["image", "label"]))] = value
        elif isinstance(meta.get(where), dict):
            meta[where][key] = value
        else:
            meta[where] = value
    return meta


msd_text = st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.composite(_mutate)().map(lambda m: json.dumps(m).encode()),
    st.composite(_mutate)()
    .map(lambda m: json.dumps(m).encode())
    .flatmap(
        lambda b: st.integers(0, max(len(b) - 1, 0)).map(lambda i: b[:i] + b[i + 1 :])  # one byte dropped
    ),
)


@pytest.fixture(scope="module")
def msd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("msd") / "Task01_Tiny"
    rng = np.random.default_rng(0)
    aff = np.diag([0.9, 1.1, 2.5, 1.0])
    for cid in ("a", "b"):
        for sub, data in (("imagesTr", rng.normal(size=(5, 4, 3)).astype(np.float32)), ("labelsTr", rng.integers(0, 2, (5, 4, 3)).astype(np.uint8))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, aff), str(root / sub / f"{cid}.nii.gz"))
    return root


@settings(max_examples=max(50, settings.default.max_examples * 2 // 3))
@given(data=msd_text)
def test_msd_dataset_json_is_read_or_refused(msd_folder: Path, data: bytes) -> None:
    (msd_folder / "dataset.json").write_bytes(data)
    try:
        imp = read_msd(msd_folder)
        cases = list(imp.cases)
    except MedsegError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("read")
    meta = json.loads(data.decode("utf-8-sig"))
    assert isinstance(meta, dict) and 1 <= len(cases) <= 2
    assert len(imp.info.class_names) == len(meta["labels"]) and imp.info.modalities
    for case in cases:
        np.testing.assert_array_equal(case.image[0], nib.load(case.meta["source"]).get_fdata(dtype=np.float32))


# ---------------------------------------------------------------------------- the CSV case list

CELLS = ["images/a.nii.gz", "images/b.nii.gz", "labels/a.nii.gz", "missing.nii.gz", "P1", "a", "", '"q,uoted"', "a;b", "images/a.nii.gz;images/a.nii.gz"]
HEADERS = ["image", "label", "patient", "case", "image_0000", "image_0001", "", "x"]


def _edit(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    """``data`` with the byte at each position replaced (``b""``: deleted)."""
    for at, new in edits:
        data = data[:at] + new + data[at + 1 :]
    return data


VALID_CSV = b"image,label,patient,case\nimages/a.nii.gz,labels/a.nii.gz,P1,a\nimages/b.nii.gz,labels/b.nii.gz,P2,b\n"
csv_text = st.one_of(
    st.binary(max_size=150),
    st.lists(st.tuples(st.integers(0, len(VALID_CSV) - 1), st.sampled_from([b"", b",", b";", b'"', b"\n", b"\x00", b"\xff", b"x", b"\r"])), max_size=3).map(
        lambda edits: _edit(VALID_CSV, edits)
    ),
    st.tuples(
        st.lists(st.sampled_from(HEADERS), min_size=0, max_size=5),
        st.lists(st.lists(st.sampled_from(CELLS), max_size=6), max_size=4),
        st.sampled_from(["\n", "\r\n", "\r"]),
    ).map(lambda t: t[2].join([",".join(t[0]), *(",".join(r) for r in t[1])]).encode()),
    st.text(alphabet=string.printable + "é\x00\ufeff", max_size=100).map(lambda s: s.encode()),
)


@pytest.fixture(scope="module")
def csv_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    for cid in ("a", "b"):
        (root / "images").mkdir(exist_ok=True)
        (root / "labels").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(rng.normal(size=(5, 4, 3)).astype(np.float32), np.eye(4)), str(root / "images" / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(rng.integers(0, 2, (5, 4, 3)).astype(np.uint8), np.eye(4)), str(root / "labels" / f"{cid}.nii.gz"))
    return root


@given(data=csv_text)
def test_csv_case_list_is_read_or_refused(csv_folder: Path, data: bytes) -> None:
    path = csv_folder / "cases.csv"
    path.write_bytes(data)
    try:
        imp = read_csv_paths(path)
        cases = list(imp.cases)
    except MedsegError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("read")
    assert 1 <= len(cases) <= 2 * len(data.splitlines())
    for case in cases:
        np.testing.assert_array_equal(case.image[0], nib.load(case.meta["source"]).get_fdata(dtype=np.float32))
