"""Write files and folders so that a crash never leaves a half-written output behind.

Everything is written to a temporary sibling first and moved into place with ``os.replace``,
which is atomic on one file system.

Temporary names are recognisable: ``.<name>.~<pid>-<host>.<random>.tmp<suffix>`` (files, folders) or
``….old`` (a folder being replaced). A process killed before it could tidy up (``kill -9``, power
loss) leaves them behind; the next write into the same folder removes those whose process is gone
(:func:`clean_stale`), and :func:`is_temporary` tells readers to skip them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: ``.<name>.~<pid>-<host>.<random>.tmp…`` / ``….old``
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.~(?P<pid>\d+)-(?P<host>[0-9a-f]{4})\.[A-Za-z0-9_]+\.(?:tmp.*|old)$")
#: temporaries of another machine (a shared file system) count as stale after this many seconds
FOREIGN_STALE_S = 24 * 3600
_cleaned: set[Path] = set()


def host_tag() -> str:
    """Four hex digits naming this machine in temporary names."""
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


def temp_prefix(name: str) -> str:
    """The start of a temporary name for the output ``name``, naming this process."""
    return f".{name}.~{os.getpid()}-{host_tag()}."


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is a temporary of an atomic write (never an output: skip it when listing files)."""
    return TEMP_RE.match(Path(path).name) is not None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_stale(path: str | Path) -> bool:
    """A temporary whose writer is gone: its process died (same machine) or it is older than a day (another machine)."""
    m = TEMP_RE.match(Path(path).name)
    if m is None:
        return False
    if m["host"] == host_tag():
        return int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"]))
    try:
        return time.time() - os.lstat(path).st_mtime > FOREIGN_STALE_S
    except OSError:
        return False


def clean_stale(folder: str | Path, force: bool = False) -> list[Path]:
    """Remove the stale temporaries in ``folder`` (once per folder and process unless ``force``).

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    key = folder.resolve() if folder.exists() else folder.absolute()
    if key in _cleaned and not force:
        return []
    _cleaned.add(key)
    removed = []
    try:
        entries = [e.path for e in os.scandir(folder) if e.name.startswith(".") and ".~" in e.name]
    except OSError:
        return []
    for p in map(Path, entries):
        if not is_stale(p):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:  # another process tidies at the same time
            pass
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the file's suffix so libraries that infer the format from the
    extension (nibabel, matplotlib, numpy) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    stem = path.name[: -len(suffix)] if suffix and path.name.endswith(suffix) else path.stem
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(stem), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it onto ``path`` when the block succeeds.

    Args:
        path: the final folder.
        overwrite: replace an existing folder (only after the new one is complete).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            trash = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".old", dir=path.parent))
            os.replace(path, trash / "old")
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
