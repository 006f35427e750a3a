"""The workspace folder of ``medseg workspace ROOT``: where the page may read and write, and nowhere else.

Layout::

    ROOT/
      data/       source folders to import (copy them here, or upload a zip: data/uploads/<name>/)
      datasets/   data sets created from the page (``medseg import``), one folder each
      runs/       run folders (``medseg train``); comparison reports in runs/comparisons/<name>/
      weights/    pretrained weight files offered to new runs
      jobs/       one record (<id>.json) and one log (<id>.log) per job

Every path the page names is relative to one of these folders and resolved by :meth:`Workspace.inside`,
which refuses absolute paths, ``..`` and symbolic links that lead out of the root; names of new
things (data sets, runs) must match :data:`NAME_RE`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from medseg.demo.runs import DemoError

#: names of data sets, runs and comparisons created from the page
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FOLDERS = ("data", "datasets", "runs", "weights", "jobs")
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")
#: a zip's expanded size is capped at this multiple of the upload limit
ZIP_EXPANSION = 4
ZIP_MAX_MEMBERS = 100_000


def check_name(name: str | None, what: str) -> str:
    """A name for a new data set / run: letters, digits, ``_ . -``, at most 64 characters."""
    text = (name or "").strip()
    if not NAME_RE.match(text) or text.endswith("."):
        raise DemoError(f"{what} name {text!r} is not allowed", where=what, fix="use letters, digits, '_', '.', '-' (at most 64, no leading dot)")
    return text


class Workspace:
    """One workspace root and its sub-folders (created when missing).

    Args:
        root: the workspace folder; everything the page reads or writes lies inside it.
        max_upload_mb: the largest zip accepted as a data upload.
    """

    def __init__(self, root: str | Path, max_upload_mb: float = 512):
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise DemoError("the workspace is not a folder", where=root, fix="give a folder (it is created when missing)")
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_upload_mb * 2**20)

    def folder(self, name: str) -> Path:
        return self.root / name

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def inside(self, relative: str | None, base: str = "", *, must_exist: bool = True) -> Path:
        """Resolve ``relative`` (a path the page sent) under ``ROOT/base``, refusing anything that leaves the root.

        Args:
            relative: the path, relative to ``ROOT/base``; ``""`` is the base itself.
            base: one of :data:`FOLDERS`, or ``""`` for the root.
            must_exist: refuse a path that does not exist.

        Raises:
            DemoError: absolute path, a ``..`` component, a link out of the root, or a missing path.
        """
        text = str(relative or "").replace("\\", "/").strip()
        where = f"{base}/{text}" if base else text
        if text.startswith("/") or os.path.isabs(text) or (len(text) > 1 and text[1] == ":") or text.startswith("~"):
            raise DemoError("absolute paths are refused", where=where or "/", fix="choose a folder inside the workspace")
        if any(part == ".." for part in text.split("/")) or "\x00" in text:
            raise DemoError("paths leaving the workspace are refused", where=where, fix="choose a folder inside the workspace")
        start = self.root / base if base else self.root
        target = (start / text).resolve()
        try:
            target.relative_to(start.resolve())
        except ValueError:
            raise DemoError("the path leads outside the workspace (a symbolic link?)", where=where, fix="copy the files into the workspace") from None
        if must_exist and not target.exists():
            raise DemoError("no such file or folder", where=where, fix="pick one from the list")
        return target

    def rel(self, path: Path) -> str:
        """``path`` relative to the root (as the page shows it)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    # ------------------------------------------------------------------ listings

    def subfolders(self, relative: str = "", base: str = "data") -> list[str]:
        """The folders one level below ``base/relative`` (for the folder picker), relative to ``base``."""
        start = self.inside(relative, base)
        root = (self.root / base).resolve()
        out = []
        for p in sorted(start.iterdir()) if start.is_dir() else []:
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                out.append(p.resolve().relative_to(root).as_posix())
            except ValueError:
                continue  # a link out of the root is not offered
        return out

    def data_folders(self, depth: int = 3) -> list[str]:
        """Every folder under ``data/`` up to ``depth`` levels, relative to ``data/`` (``""`` first: data/ itself)."""
        out, frontier = [""], [""]
        for _ in range(depth):
            frontier = [c for f in frontier for c in self.subfolders(f)]
            out += frontier
        return out

    def datasets(self) -> list[str]:
        """Data set folders under ``datasets/`` (those with a ``dataset.json``), newest first."""
        base = self.root / "datasets"
        found = [p for p in base.iterdir() if p.is_dir() and (p / "dataset.json").is_file() and self._within(p)]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    def weights(self) -> list[str]:
        """Weight files under ``weights/`` (any depth), relative to ``weights/``."""
        base = self.root / "weights"
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file() and self._within(p))

    def _within(self, p: Path) -> bool:
        try:
            p.resolve().relative_to(self.root)
            return True
        except ValueError:
            return False

    def dataset_path(self, name: str | None) -> Path:
        path = self.inside(check_name(name, "data set"), "datasets")
        if not (path / "dataset.json").is_file():
            raise DemoError("not a data set folder (no dataset.json)", where=f"datasets/{name}", fix="create it on the Data sets page")
        return path

    def new_path(self, name: str | None, base: str, what: str) -> Path:
        """``ROOT/base/<name>`` for something new; refused when it exists already."""
        path = self.inside(check_name(name, what), base, must_exist=False)
        if path.exists():
            raise DemoError(f"a {what} named {name!r} exists already", where=f"{base}/{name}", fix="choose another name")
        return path

    # ------------------------------------------------------------------ uploads

    def save_upload(self, upload: str | Path, name: str | None) -> str:
        """Extract an uploaded zip into ``data/uploads/<name>/``; returns that folder relative to ``data/``.

        The zip is capped (size, expanded size, member count); member names are checked like page paths
        (no absolute paths, no ``..``) and links are not extracted.
        """
        src = Path(upload)
        (self.root / "data" / "uploads").mkdir(exist_ok=True)
        dest = self.new_path(name, "data/uploads", "upload")
        if src.stat().st_size > self.max_bytes:
            raise DemoError(f"the upload is larger than {self.max_bytes / 2**20:g} MB", where=src.name, fix="copy the folder into data/ instead")
        try:
            zf = zipfile.ZipFile(src)
        except zipfile.BadZipFile:
            raise DemoError("not a zip file", where=src.name, fix="upload a .zip of image and label folders") from None
        with zf:
            members = zf.infolist()
            if len(members) > ZIP_MAX_MEMBERS or sum(m.file_size for m in members) > ZIP_EXPANSION * self.max_bytes:
                raise DemoError("the zip expands to too much data", where=src.name, fix="copy the folder into data/ instead")
            tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{time.monotonic_ns()}")
            try:
                for m in members:
                    parts = m.filename.replace("\\", "/").split("/")
                    if m.filename.startswith("/") or ".." in parts or ":" in parts[0]:
                        raise DemoError("the zip holds a path leaving its folder", where=f"{src.name}: {m.filename}", fix="zip the folders with relative paths")
                    if (m.external_attr >> 16) & 0o170000 == 0o120000:
                        continue  # a symbolic link: not extracted
                    target = tmp.joinpath(*[p for p in parts if p])
                    if m.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                tmp.mkdir(parents=True, exist_ok=True)
                tmp.rename(dest)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return self.rel(dest).removeprefix("data/")

    def summary(self) -> dict[str, Any]:
        return {"root": str(self.root), "datasets": len(self.datasets()), "weights": len(self.weights())}
