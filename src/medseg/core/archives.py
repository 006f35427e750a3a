"""Zip archives opened safely: sizes, counts and compression ratios checked before anything is written.

Every zip the CLI or the demo accepts (a zipped DICOM series or folder) goes through :func:`open_zip`:

* the archive's entry count and central-directory size are read from its end record *before*
  :mod:`zipfile` parses the directory (a small file can list millions of entries);
* each member's declared size, its compression ratio, the total and the free disk space are checked
  against :class:`ZipLimits` before one byte is extracted (a 1.5 MB "zip bomb" member that inflates
  to 1.5 GB is refused at once);
* members are streamed to disk in 1 MiB chunks, counted as they come (a member producing more than
  it declared is refused), under sanitised names inside one temporary folder (never the member's
  own path: no "zip slip", no links);
* the folder is removed on every exit path (error, ``KeyboardInterrupt``, SIGTERM through
  :mod:`medseg.core.signals`); after ``kill -9`` its recognisable name lets the next extraction
  remove it (:func:`medseg.core.atomic.clean_stale`);
* errors raised while the extracted files are read name ``archive.zip:member``, never the temporary
  path (:meth:`Extracted.naming_errors`).

Written here because :mod:`zipfile` extracts whatever an archive declares, and no imaging library
reads a zipped series directly.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medseg.core.atomic import clean_stale, temp_prefix
from medseg.core.errors import FormatError, MedsegError

CHUNK = 2**20
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"


class ArchiveError(FormatError):
    """A zip archive is malformed, encrypted, or larger than the limits allow."""


@dataclass(frozen=True)
class ZipLimits:
    """What an archive may hold.

    Args:
        max_members: files in the archive.
        max_member_bytes: uncompressed size of one member.
        max_total_bytes: uncompressed size of all extracted members together.
        max_ratio: uncompressed / compressed size of one member, checked for members over ``ratio_floor_bytes``.
        ratio_floor_bytes: smaller members may compress as well as they like.
    """

    max_members: int = 100_000
    max_member_bytes: int = 2 * 2**30
    max_total_bytes: int = 16 * 2**30
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 64 * 2**20


def _mb(n: float) -> str:
    if n >= 10 * 2**20:
        return f"{n / 2**20:,.0f} MB"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} KB"


def directory_size(path: Path) -> tuple[int, int]:
    """``(entries, central-directory bytes)`` from the archive's end record (zip64 included), without parsing the directory."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        tail_len = min(size, 22 + 65535)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            raise ArchiveError("cannot read the zip: no end-of-directory record (truncated, or not a zip)", where=path, fix="give an intact .zip file")
        _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[at : at + 22])
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF:  # zip64: the real numbers are in the zip64 end record
            loc = at - 20
            if loc < 0 or tail[loc : loc + 4] != _EOCD64_LOCATOR:
                raise ArchiveError("cannot read the zip: zip64 locator record missing", where=path, fix="give an intact .zip file")
            _, _, rec_offset, _ = struct.unpack("<4sLQL", tail[loc : loc + 20])
            fh.seek(rec_offset)
            rec = fh.read(56)
            if len(rec) < 56 or rec[:4] != _EOCD64:
                raise ArchiveError("cannot read the zip: zip64 end record missing", where=path, fix="give an intact .zip file")
            _, _, _, _, _, _, _, entries, cd_size, _ = struct.unpack("<4sQ2H2L4Q", rec)
    return int(entries), int(cd_size)


_UNSAFE = re.compile(r"[^A-Za-z0-9._ ()+,=@\[\]{}~#-]")


def safe_relative(name: str, index: int) -> Path:
    """A relative path for member ``name`` that stays inside the extraction folder.

    Separators of both kinds split components; empty, ``.``, ``..`` and drive components are dropped;
    unusual characters become ``_``; components are cut to 100 characters. A name that keeps nothing
    becomes ``member_<index>``.
    """
    parts = []
    for part in re.split(r"[\\/]+", name):
        part = part.strip()
        if part in ("", ".", "..") or (len(part) == 2 and part[1] == ":"):
            continue
        part = _UNSAFE.sub("_", part)[:100]
        parts.append(part if part.strip(".") else f"_{part}")
    return Path(*parts) if parts else Path(f"member_{index}")


class Extracted:
    """A zip's members extracted to a temporary folder; remove with :meth:`cleanup` (also run when collected).

    Attributes:
        archive: the zip file.
        root: the temporary folder holding the members.
        members: extracted path → the member's name in the archive.
    """

    def __init__(self, archive: Path, root: Path):
        self.archive = archive
        self.root = root
        self.members: dict[Path, str] = {}
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(root), True)

    def cleanup(self) -> None:
        self._finalizer()

    def shown(self, path: str | Path) -> str:
        """How to name an extracted file (or folder) to a person: ``archive.zip:member``."""
        p = Path(path)
        if p in self.members:
            return f"{self.archive}:{self.members[p]}"
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            return str(p)
        return f"{self.archive}:{rel.as_posix()}" if rel.parts else str(self.archive)

    def describe(self, text: str) -> str:
        """``text`` with every temporary path replaced by ``archive.zip:member``."""
        root = str(self.root)
        if root not in text:
            return text
        return re.sub(re.escape(root) + r"(?:/[^\s:,;'\")]*)?", lambda m: self.shown(m.group(0)), text)

    @contextlib.contextmanager
    def naming_errors(self) -> Iterator[None]:
        """Re-raise a ``MedsegError`` of the block with the temporary paths in it named after the archive."""
        try:
            yield
        except MedsegError as e:
            e.problem = self.describe(e.problem)
            e.where = None if e.where is None else self.describe(e.where)
            e.fix = None if e.fix is None else self.describe(e.fix)
            e.args = (e.one_line(),)
            raise


def check_members(path: Path, infos: list[zipfile.ZipInfo], limits: ZipLimits, free_bytes: int | None = None) -> int:
    """Refuse an archive whose members break ``limits`` (before extraction); returns their total size."""
    if len(infos) > limits.max_members:
        raise ArchiveError(
            f"the zip holds {len(infos):,} files, more than the limit of {limits.max_members:,}", where=path, fix="split it into smaller archives"
        )
    total = 0
    for m in infos:
        if m.flag_bits & 0x1:
            raise ArchiveError(f"member {m.filename!r} is encrypted", where=path, fix="zip the files without a password")
        if m.file_size > limits.max_member_bytes:
            raise ArchiveError(
                f"member {m.filename!r} expands to {_mb(m.file_size)}, more than the limit of {_mb(limits.max_member_bytes)}",
                where=path,
                fix="give the files unzipped, in a folder",
            )
        ratio = m.file_size / max(m.compress_size, 1)
        if m.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
            raise ArchiveError(
                f"member {m.filename!r} expands {ratio:,.0f}× ({_mb(m.compress_size)} → {_mb(m.file_size)}): a zip bomb?",
                where=path,
                fix="give the files unzipped, in a folder",
            )
        total += m.file_size
    if total > limits.max_total_bytes:
        raise ArchiveError(
            f"the zip expands to {_mb(total)}, more than the limit of {_mb(limits.max_total_bytes)}", where=path, fix="split it, or give a folder"
        )
    if free_bytes is not None and total > free_bytes:
        raise ArchiveError(f"the zip expands to {_mb(total)}, more than the free disk space ({_mb(free_bytes)})", where=path, fix="free disk space")
    return total


def _stream(zf: zipfile.ZipFile, m: zipfile.ZipInfo, dest: Path, path: Path, budget: int) -> int:
    written = 0
    with zf.open(m) as src, open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > m.file_size or written > budget:
                raise ArchiveError(f"member {m.filename!r} holds more data than it declares", where=path, fix="give an intact .zip file")
            out.write(chunk)
    return written


def _extract(path: Path, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], ex: Extracted, total: int) -> None:
    budget = total
    for i, m in enumerate(infos):
        rel = safe_relative(m.filename, i)
        dest = ex.root / rel
        if dest in ex.members or dest == ex.root:
            dest = dest.with_name(f"{i:06d}_{dest.name}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        budget -= _stream(zf, m, dest, path, budget)
        ex.members[dest] = m.filename


@contextlib.contextmanager
def open_zip(path: str | Path, limits: ZipLimits | None = None, keep: Callable[[str], bool] | None = None) -> Iterator[Extracted]:
    """Extract a zip safely into a temporary folder that is removed when the block ends.

    Args:
        path: the ``.zip`` file.
        limits: what the archive may hold (default :class:`ZipLimits`).
        keep: called with each member's name; members it refuses are neither counted nor extracted.

    Yields:
        The :class:`Extracted` members.

    Raises:
        ArchiveError: malformed, encrypted or over a limit (one line, naming the archive).
    """
    ex = extract(path, limits, keep)
    try:
        with ex.naming_errors():
            yield ex
    finally:
        ex.cleanup()


def extract(path: str | Path, limits: ZipLimits | None = None, keep: Callable[[str], bool] | None = None) -> Extracted:
    """Like :func:`open_zip`, for callers whose extracted files outlive one block (a generator of cases):
    they call ``cleanup()`` themselves (and it also runs when the object is collected)."""
    path = Path(path)
    limits = limits or ZipLimits()
    entries, cd_size = directory_size(path)
    if entries > limits.max_members or cd_size > limits.max_members * 2048:
        raise ArchiveError(
            f"the zip lists {entries:,} entries, more than the limit of {limits.max_members:,}", where=path, fix="split it into smaller archives"
        )
    tmp_root = Path(tempfile.gettempdir())
    clean_stale(tmp_root)  # folders of earlier extractions killed before they could tidy up
    root = Path(tempfile.mkdtemp(prefix=temp_prefix("medseg-zip"), suffix=".tmp", dir=tmp_root))
    ex = Extracted(path, root)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [m for m in zf.infolist() if not m.is_dir() and (keep is None or keep(m.filename))]
            total = check_members(path, infos, limits, shutil.disk_usage(root).free)
            _extract(path, zf, infos, ex, total)
    except MedsegError:
        ex.cleanup()
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as e:
        ex.cleanup()
        text = ex.describe(str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ArchiveError(f"cannot read the zip ({text})", where=path, fix="give an intact, unencrypted .zip file") from None
    except BaseException:
        ex.cleanup()
        raise
    return ex


def is_zip(path: str | Path) -> bool:
    """Whether ``path`` is a file holding a zip archive (by its content, not its name)."""
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)


__all__ = ["ArchiveError", "Extracted", "ZipLimits", "check_members", "directory_size", "extract", "is_zip", "open_zip", "safe_relative"]
