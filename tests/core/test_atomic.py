"""Atomic writes leave nothing behind: temporaries are recognisable, removed on SIGTERM, and those of a
writer killed with SIGKILL are removed by the next write into the same folder (never counted as outputs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medseg.core.atomic import atomic_dir, atomic_path, clean_stale, host_tag, is_stale, is_temporary, temp_prefix

SRC = Path(__file__).resolve().parents[2] / "src"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_names_are_recognised(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "best.ckpt") as tmp:
        assert is_temporary(tmp) and tmp.name.startswith(".best.~") and tmp.name.endswith(".tmp.ckpt")
        assert tmp.suffix == ".ckpt"  # libraries that read the suffix still work
    with atomic_path(tmp_path / "case.nii.gz") as tmp:
        assert is_temporary(tmp) and tmp.name.endswith(".tmp.nii.gz")
    with atomic_dir(tmp_path / "pred") as tmp:
        assert is_temporary(tmp) and tmp.name.startswith(".pred.~")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "case.nii.gz", "pred"]
    for name in ("best.ckpt", ".best.ckpt", ".hidden", ".best.abc.tmp.ckpt", "x.~1-abcd.y.tmp"):
        assert not is_temporary(tmp_path / name), name


def test_stale_temporaries_go_live_and_foreign_ones_stay(tmp_path: Path) -> None:
    dead, me, parent = dead_pid(), os.getpid(), os.getppid()
    host = host_tag()
    other = f"{(int(host, 16) + 1) % 0x10000:04x}"
    files = {
        f".best.~{dead}-{host}.k2j3.tmp.ckpt": False,  # killed writer on this machine: stale
        f".curves.~{dead}-{host}.zz9.tmp.png": False,
        f".best.~{parent}-{host}.k2j4.tmp.ckpt": True,  # a live writer: kept
        f".best.~{me}-{host}.k2j5.tmp.ckpt": True,  # this process: kept
        f".best.~{dead}-{other}.k2j6.tmp.ckpt": True,  # another machine, recent: kept
        ".notes.txt": True,
        "best.ckpt": True,
    }
    for name in files:
        (tmp_path / name).write_text("x")
    old_foreign = tmp_path / f".last.~{dead}-{other}.a1.tmp.ckpt"
    old_foreign.write_text("x")
    os.utime(old_foreign, (time.time() - 2 * 86400,) * 2)  # another machine, two days old: stale
    (tmp_path / f".ds.~{dead}-{host}.q1.tmp").mkdir()  # a folder being built
    (tmp_path / f".ds.~{dead}-{host}.q1.tmp" / "case.npy").write_text("x")
    (tmp_path / f".ds.~{dead}-{host}.q2.old").mkdir()  # a folder being replaced
    assert is_stale(tmp_path / f".best.~{dead}-{host}.k2j3.tmp.ckpt") and not is_stale(tmp_path / "best.ckpt")
    with atomic_path(tmp_path / "history.csv") as tmp:  # the next write into the folder tidies it
        tmp.write_text("epoch\n")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {name for name, keep in files.items() if keep} | {"history.csv"}


KILLABLE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from medseg.core.atomic import atomic_path
    from medseg.core.signals import sigterm_raises
    with sigterm_raises(), atomic_path(Path(sys.argv[1]) / "best.ckpt") as tmp:
        tmp.write_bytes(b"half a checkpoint")
        print("writing", flush=True)
        time.sleep(60)
    """
)


def _start_writer(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(folder)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def test_sigterm_removes_the_temporary(tmp_path: Path) -> None:
    proc = _start_writer(tmp_path)
    assert [p for p in tmp_path.iterdir() if is_temporary(p)]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_sigkill_leftover_is_removed_by_the_next_write(tmp_path: Path) -> None:
    proc = _start_writer(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and is_temporary(left[0]) and left[0].read_bytes() == b"half a checkpoint"
    with atomic_path(tmp_path / "last.ckpt") as tmp:
        tmp.write_bytes(b"ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_clean_stale_runs_once_per_folder(tmp_path: Path) -> None:
    stale = tmp_path / f"{temp_prefix('x').replace(str(os.getpid()), str(dead_pid()))}abc.tmp"
    assert clean_stale(tmp_path) == []
    stale.write_text("x")
    assert clean_stale(tmp_path) == []  # already tidied in this process
    assert clean_stale(tmp_path, force=True) == [stale]


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_failed_block_leaves_nothing(tmp_path: Path, exc: type[BaseException]) -> None:
    with pytest.raises(exc), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{")
        raise exc()
    with pytest.raises(exc), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
        raise exc()
    assert list(tmp_path.iterdir()) == []


def test_mask_listing_skips_temporaries(tmp_path: Path) -> None:
    from medseg.workflows.masks import list_masks

    (tmp_path / "case1.nii.gz").write_bytes(b"x")
    (tmp_path / f".case2.~{dead_pid()}-{host_tag()}.ab12.tmp.nii.gz").write_bytes(b"half")
    assert list(list_masks(tmp_path, "prediction")) == ["case1"]
