"""The preprocessing cache: one uncompressed ``.npy`` per case and array kind, memory-mapped at training time,
and a ``cache.json`` carrying the hash of the spec (layout in docs/pipeline.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_dir, write_json
from medseg.core.errors import DatasetError
from medseg.data.preprocessing.spec import CACHE_FORMAT, PreprocessSpec
from medseg.data.preprocessing.transforms import preprocess_pair
from medseg.data.sampling import foreground_locations

CACHE_FILE = "cache.json"


def default_cache_dir(ds: Any, spec: PreprocessSpec, root: str | Path | None = None) -> Path:
    """``<root or data set>/preprocessed/<first 12 hex digits of the spec hash>``."""
    base = Path(root) if root else ds.root / "preprocessed"
    return base / spec.hash[:12]


def read_cache_info(path: str | Path) -> dict[str, Any] | None:
    p = Path(path) / CACHE_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def check_cache(path: str | Path, spec: PreprocessSpec) -> dict[str, Any] | None:
    """The cache's description if ``path`` holds a cache of this spec; None if there is no cache.

    Raises:
        DatasetError: the folder holds a cache made with another preprocessing (hash mismatch).
    """
    info = read_cache_info(path)
    if info is None:
        return None
    if info.get("hash") != spec.hash:
        raise DatasetError(
            f"the cache was built with another preprocessing (hash {str(info.get('hash'))[:12]}, expected {spec.hash[:12]})",
            where=Path(path) / CACHE_FILE,
            fix="run `medseg prepare` with --overwrite to rebuild it, or point data.preprocess.cache_dir elsewhere",
        )
    return info


def prepare(
    ds: Any,
    spec: PreprocessSpec,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Preprocess every case of a data set into a cache folder (written atomically, reused when up to date).

    Args:
        ds: the opened data set.
        spec: the resolved preprocessing.
        out: the cache folder (default :func:`default_cache_dir`).
        overwrite: rebuild even when the folder holds a cache (of this or another spec).
        progress: show a progress bar.
        seed: seed of the foreground-location subsampling.

    Returns:
        The cache folder.

    Raises:
        DatasetError: ``out`` holds a cache from another spec and ``overwrite`` is false; a case is invalid
            (nothing is left behind: the folder is built beside ``out`` and renamed when complete).
    """
    from medseg.core.progress import track

    spec.check()
    out = Path(out) if out is not None else default_cache_dir(ds, spec)
    if not overwrite:
        if check_cache(out, spec) is not None:
            return out
        if out.exists() and any(out.iterdir()):
            raise DatasetError("folder exists and is not a preprocessing cache", where=out, fix="choose another cache folder or pass --overwrite")
    rng = np.random.default_rng(seed)
    cases: dict[str, Any] = {}
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "cases").mkdir()
        for cid in track(ds.case_ids, f"preprocessing {ds.info.name}", total=len(ds), enabled=progress):
            case = ds.load_case(cid)
            img, lab, rec = preprocess_pair(case, spec)
            stem = _safe(cid)
            np.save(tmp / "cases" / f"{stem}.image.npy", img)
            entry: dict[str, Any] = {"image": f"cases/{stem}.image.npy", "record": f"cases/{stem}.json", "shape": rec["shape"]}
            if lab is not None:
                np.save(tmp / "cases" / f"{stem}.label.npy", lab)
                locs, counts = foreground_locations(lab, case.multi_label, rng)
                np.save(tmp / "cases" / f"{stem}.locs.npy", locs)
                entry.update(label=f"cases/{stem}.label.npy", locs=f"cases/{stem}.locs.npy", class_voxels=counts)
            write_json(tmp / "cases" / f"{stem}.json", rec)
            cases[cid] = entry
        write_json(
            tmp / CACHE_FILE,
            {
                "format": CACHE_FORMAT,
                "hash": spec.hash,
                "dataset": str(Path(ds.root).resolve()),
                "dataset_name": ds.info.name,
                "dims": ds.info.dims,
                "multi_label": ds.info.multi_label,
                "n_channels": ds.info.n_channels,
                "spec": spec.to_dict(),
                "cases": cases,
            },
        )
    return out


def _safe(case_id: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)
    return keep or "case"


class Cache:
    """A preprocessing cache opened for reading; arrays are memory-mapped, never loaded whole.

    Args:
        path: the cache folder.
        spec: when given, the cache must have been built with it (hash check).
    """

    def __init__(self, path: str | Path, spec: PreprocessSpec | None = None):
        self.path = Path(path)
        info = check_cache(self.path, spec) if spec is not None else read_cache_info(self.path)
        if info is None:
            raise DatasetError("no preprocessing cache here", where=self.path, fix="run `medseg prepare DATASET` first")
        self.info = info
        self.spec = PreprocessSpec.from_dict(info["spec"])

    @property
    def case_ids(self) -> list[str]:
        return list(self.info["cases"])

    def _entry(self, cid: str) -> dict[str, Any]:
        try:
            return self.info["cases"][cid]
        except KeyError:
            raise DatasetError(f"case {cid!r} is not in the cache", where=self.path / CACHE_FILE, fix="rebuild it: medseg prepare --overwrite") from None

    def _load(self, cid: str, key: str, mmap: bool = True) -> np.ndarray:
        rel = self._entry(cid).get(key)
        if rel is None:
            raise DatasetError(f"case {cid!r} has no {key} in the cache", where=self.path, fix="only labelled cases can be trained or validated on")
        try:
            return np.load(self.path / rel, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"case {cid!r}: cached {key} is unreadable ({e})", where=self.path / rel, fix="rebuild: medseg prepare --overwrite") from None

    def image(self, cid: str) -> np.ndarray:
        return self._load(cid, "image")

    def label(self, cid: str) -> np.ndarray:
        return self._load(cid, "label")

    def has_label(self, cid: str) -> bool:
        return "label" in self._entry(cid)

    def locations(self, cid: str) -> np.ndarray:
        return self._load(cid, "locs", mmap=False)

    def class_voxels(self, cid: str) -> list[int]:
        return list(self._entry(cid).get("class_voxels", []))

    def record(self, cid: str) -> dict[str, Any]:
        return json.loads((self.path / self._entry(cid)["record"]).read_text(encoding="utf-8"))
