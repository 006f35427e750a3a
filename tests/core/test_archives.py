"""Zip archives: bombs, lies and odd names are refused before extraction; the temporary folder is removed on
every exit path; errors name ``archive.zip:member``; `medseg import dicom bomb.zip` answers in one line."""

from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import write_series
from medseg.cli import app
from medseg.core.archives import ArchiveError, ZipLimits, directory_size, open_zip, safe_relative
from medseg.core.atomic import is_temporary

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def tmpdir_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temporary folder, so that leftovers of extraction are seen."""
    t = tmp_path / "tmp"
    t.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(t))
    return t


def zeros_member(path: Path, name: str, mib: int) -> Path:
    """A zip with one deflated member of ``mib`` MiB of zeros (compresses about 1000×)."""
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w", force_zip64=True) as fh:
        for _ in range(mib):
            fh.write(chunk)
    return path


def test_a_bomb_is_refused_before_anything_is_written(tmp_path: Path, tmpdir_only: Path) -> None:
    bomb = zeros_member(tmp_path / "bomb.zip", "series/IM0001.dcm", 200)
    assert bomb.stat().st_size < 2**20
    t0 = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"expands 1,0\d\d× .*a zip bomb") as e, open_zip(bomb):
        pass
    assert time.perf_counter() - t0 < 2 and "\n" not in str(e.value) and "series/IM0001.dcm" in str(e.value)
    assert list(tmpdir_only.iterdir()) == []


def test_limits_on_count_total_and_member(tmp_path: Path, tmpdir_only: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(12):
            zf.writestr(f"s/{i}.dcm", b"x" * 1000)
    assert directory_size(path)[0] == 12
    with pytest.raises(ArchiveError, match="lists 12 entries, more than the limit of 10"), open_zip(path, ZipLimits(max_members=10)):
        pass
    with pytest.raises(ArchiveError, match="expands to 12 KB, more than the limit of 10 KB"), open_zip(path, ZipLimits(max_total_bytes=10_000)):
        pass
    with pytest.raises(ArchiveError, match="expands to 1 KB, more than the limit"), open_zip(path, ZipLimits(max_member_bytes=999)):
        pass
    with open_zip(path, keep=lambda name: name.endswith(("1.dcm", "2.dcm"))) as ex:  # members left out are not extracted
        assert sorted(ex.members.values()) == ["s/1.dcm", "s/11.dcm", "s/2.dcm"]
    assert list(tmpdir_only.iterdir()) == []


def _patch_sizes(path: Path, new_size: int) -> None:
    """Make the (only) member declare ``new_size`` uncompressed bytes, in its local and central headers."""
    data = bytearray(path.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<L", data, local + 22, new_size)
    struct.pack_into("<L", data, central + 24, new_size)
    path.write_bytes(bytes(data))


def test_a_member_holding_more_than_it_declares_is_refused(tmp_path: Path, tmpdir_only: Path) -> None:
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"A" * 100_000)
    _patch_sizes(path, 10)
    with pytest.raises(ArchiveError, match="cannot read the zip") as e, open_zip(path):
        pass
    assert "\n" not in str(e.value)
    assert list(tmpdir_only.iterdir()) == []


def test_encrypted_and_truncated_archives(tmp_path: Path, tmpdir_only: Path) -> None:
    path = tmp_path / "enc.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.dcm", b"secret")
    data = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        at = data.find(sig)
        data[at + off] |= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"'a\.dcm' is encrypted"), open_zip(path):
        pass
    (tmp_path / "cut.zip").write_bytes(path.read_bytes()[:30])
    with pytest.raises(ArchiveError, match="no end-of-directory record"), open_zip(tmp_path / "cut.zip"):
        pass
    assert list(tmpdir_only.iterdir()) == []


def test_member_names_never_leave_the_folder(tmp_path: Path, tmpdir_only: Path) -> None:
    path = tmp_path / "slip.zip"
    names = ["../../evil.dcm", "/etc/passwd", "C:\\Windows\\x.dcm", "a/../../b.dcm", "ok/./c.dcm", "..", "d\x01e.dcm"]
    with zipfile.ZipFile(path, "w") as zf:
        for n in names:
            zf.writestr(n, n.encode())
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16  # a symbolic link to /etc/passwd
        zf.writestr(link, "/etc/passwd")
    with open_zip(path) as ex:
        for dest, member in ex.members.items():
            assert dest.resolve().is_relative_to(ex.root.resolve()) and not dest.is_symlink() and dest.is_file()
            assert dest.read_bytes() == (member.encode() if member != "link.dcm" else b"/etc/passwd")
        assert {str(p.relative_to(ex.root)) for p in ex.members} == {
            "evil.dcm",
            "etc/passwd",
            "Windows/x.dcm",
            "a/b.dcm",
            "ok/c.dcm",
            "member_5",
            "d_e.dcm",
            "link.dcm",
        }
        root = ex.root
    assert not root.exists() and not (tmp_path.parent / "evil.dcm").exists()
    assert safe_relative("../../x", 0) == Path("x")


def test_folder_is_removed_on_error_and_interrupt(tmp_path: Path, tmpdir_only: Path) -> None:
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.dcm", b"x")
    for exc in (ValueError, KeyboardInterrupt):
        with pytest.raises(exc), open_zip(path) as ex:
            assert ex.root.is_dir() and ex.root.parent == tmpdir_only
            raise exc()
        assert list(tmpdir_only.iterdir()) == []


HOLD = textwrap.dedent(
    """
    import sys, time
    from medseg.core.archives import open_zip
    from medseg.core.signals import sigterm_raises
    with sigterm_raises(), open_zip(sys.argv[1]) as ex:
        print(ex.root, flush=True)
        time.sleep(60)
    """
)


def test_sigterm_removes_the_folder_and_sigkill_leftovers_go_next_time(tmp_path: Path, tmpdir_only: Path) -> None:
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.dcm", b"x")
    env = {**os.environ, "TMPDIR": str(tmpdir_only), "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, env=env, text=True)
        assert proc.stdout is not None
        root = Path(proc.stdout.readline().strip())
        assert root.parent == tmpdir_only and (root / "a.dcm").is_file() and is_temporary(root)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert root.exists() == (sig == signal.SIGKILL)
    with open_zip(path) as ex:  # the next extraction removes the killed one's folder
        assert [p for p in tmpdir_only.iterdir()] == [ex.root]
    assert list(tmpdir_only.iterdir()) == []


def test_import_dicom_bomb_is_one_line_and_leaves_nothing(tmp_path: Path, tmpdir_only: Path) -> None:
    bomb = zeros_member(tmp_path / "bomb.zip", "series/IM0001.dcm", 200)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["import", "dicom", str(bomb), "--out", str(out), "--no-progress"])
    assert time.perf_counter() - t0 < 10
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "bomb.zip" in lines[0] and "zip bomb" in lines[0], res.output
    assert not out.exists() and list(tmpdir_only.iterdir()) == []


def test_dicom_zip_errors_name_the_member_not_a_temporary_path(tmp_path: Path, tmpdir_only: Path) -> None:
    write_series(tmp_path / "in" / "P1" / "ct")
    broken = sorted((tmp_path / "in").rglob("*.dcm"))[2]
    broken.write_bytes(broken.read_bytes()[:-10])  # pixel data cut short
    zpath = tmp_path / "scans.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((tmp_path / "in").rglob("*.dcm")):
            zf.write(p, p.relative_to(tmp_path / "in"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["import", "dicom", str(zpath), "--out", str(out), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert f"{zpath}:P1/ct/{broken.name}" in lines[0] and str(tmpdir_only) not in lines[0], lines[0]
    assert not out.exists() and list(tmpdir_only.iterdir()) == []


@pytest.mark.slow
def test_the_reported_bomb_1_5_gb_from_1_5_mb(tmp_path: Path, tmpdir_only: Path) -> None:
    bomb = zeros_member(tmp_path / "bomb.zip", "series/IM0001.dcm", 1500)
    assert bomb.stat().st_size < 2 * 2**20
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["import", "dicom", str(bomb), "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 2 and "zip bomb" in res.output and time.perf_counter() - t0 < 10
    assert list(tmpdir_only.iterdir()) == []
