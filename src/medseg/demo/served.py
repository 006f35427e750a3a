"""What the demo hands to gradio, kept race-free and bounded in memory and on disk.

* **Pictures as files.** gradio stores a picture returned as an array in a cache file named after
  its content, written in place (``save_pil_to_cache``), so two requests producing the same picture
  (the same file uploaded twice at once) rewrite a file that a third client is downloading: the
  download ends short of its ``Content-Length`` (h11 "Too little data for declared
  Content-Length") and the request is lost. A picture returned as a *file* is copied into the cache
  under a temporary name and renamed, and an existing copy is reused, never rewritten. So the demo
  writes every picture itself (:meth:`Served.picture`, atomically, named by content) and gives
  gradio the path.
* **Upload views on disk, by token.** The slice slider of an uploaded image needs its volume and
  prediction; kept in a ``gr.State`` they would stay in memory for every API session (gradio frees
  a session's state when a browser tab closes, never for scripts): the server grew by the size of
  every upload. They are written to ``views/<token>/`` instead (:meth:`Served.remember`) and read
  back memory-mapped, one slice at a time (:meth:`Served.recall`); the session holds the token.
* **Old outputs go.** Pictures, views and mask folders older than ``max_age_s`` (an hour) are
  removed; a view in use is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_dir, atomic_path, is_temporary

_TOKEN = re.compile(r"[0-9a-f]{24}")


class Served:
    """Pictures and upload views of one demo server.

    Args:
        folder: the server's output folder (``pictures/``, ``views/`` and the ``mask-*`` folders).
        max_age_s: outputs older than this are removed.
    """

    def __init__(self, folder: str | Path, max_age_s: float = 3600.0):
        self.folder = Path(folder)
        self.pictures = self.folder / "pictures"
        self.views = self.folder / "views"
        self.pictures.mkdir(parents=True, exist_ok=True)
        self.views.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._last_prune = time.monotonic()

    # ------------------------------------------------------------------ pictures

    def picture(self, rgb: np.ndarray | None) -> str | None:
        """A PNG file of ``rgb`` (written once, atomically, named by its content), for a gradio image output."""
        if rgb is None:
            return None
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
        path = self.pictures / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        try:
            os.utime(path)  # in use again: not pruned
        except FileNotFoundError:
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        self.prune()
        return str(path)

    def prune(self, force: bool = False) -> int:
        """Remove pictures, views and mask folders older than ``max_age_s`` (at most once a minute unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_prune < 60:
            return 0
        self._last_prune = now
        cutoff = time.time() - self.max_age_s
        removed = 0
        entries = [p for d in (self.pictures, self.views) for p in d.iterdir() if not is_temporary(p)]
        entries += [p for p in self.folder.glob("mask-*") if p.is_dir()]
        for p in entries:
            try:
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed += 1
            except OSError:  # removed meanwhile
                pass
        return removed

    # ------------------------------------------------------------------ upload views

    def remember(self, view: dict[str, Any]) -> str:
        """Write an upload's view (arrays as ``.npy``, the rest as JSON) and return its token."""
        token = secrets.token_hex(12)
        with atomic_dir(self.views / token) as tmp:
            meta = {}
            for key, value in view.items():
                if isinstance(value, np.ndarray):
                    np.save(tmp / f"{key}.npy", value, allow_pickle=False)
                else:
                    meta[key] = value
            (tmp / "view.json").write_text(json.dumps(meta, default=_plain), encoding="utf-8")
        self.prune()
        return token

    def recall(self, token: str | None) -> dict[str, Any] | None:
        """The view behind ``token`` (arrays memory-mapped), or ``None`` once it was removed."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        folder = self.views / token
        try:
            view: dict[str, Any] = json.loads((folder / "view.json").read_text(encoding="utf-8"))
            for p in folder.glob("*.npy"):
                view[p.stem] = np.load(p, mmap_mode="r", allow_pickle=False)
            os.utime(folder)  # in use: not pruned
        except (OSError, ValueError):
            return None
        if "colors" in view:
            view["colors"] = [tuple(c) for c in view["colors"]]
        return view


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
