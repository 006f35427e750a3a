"""Importers: one file per on-disk format, each registered in ``FORMATS``.

An importer is a function ``read(path, **options) -> Imported``: it scans the layout (cheap), builds
the :class:`~medseg.data.store.DatasetInfo` and returns a *generator* of :class:`~medseg.core.case.Case`
so that memory stays flat however many cases there are. :func:`import_dataset` hands that to
:func:`~medseg.data.store.write_dataset`, which writes the canonical folder atomically.

Add a format::

    @FORMATS.register("myformat", help="one line for `medseg import --help`")
    def read_myformat(path: Path, classes: list[str] | None = None) -> Imported: ...

Its keyword arguments are the format's options (``--option KEY=VALUE`` on the command line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.data.formats.registry import FORMATS, FormatError, Imported, format_options, list_formats
from medseg.data.store import Dataset


def import_dataset(fmt: str, path: str | Path, out: str | Path, *, overwrite: bool = False, seed: int = 0, progress: bool = False, **options: Any) -> Dataset:
    """Read ``path`` in format ``fmt`` and write the canonical data set folder ``out``.

    Args:
        fmt: a registered format name (see ``medseg import --help``).
        path: the input file or folder.
        out: the data set folder to create; refused if it exists unless ``overwrite``.
        overwrite: replace an existing ``out`` once the new folder is complete.
        seed: seed of the patient-grouped split made when the format gives none.
        progress: show a progress bar while cases are written.
        **options: format options, checked against the reader's signature.

    Returns:
        The written data set, opened.
    """
    from medseg.core.progress import track
    from medseg.data.splits import make_splits, save_splits
    from medseg.data.store import write_dataset

    reader = FORMATS.get(fmt)
    allowed = format_options(fmt)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise FormatError(
            f"format {fmt!r} takes no option {', '.join(unknown)}",
            where="--option",
            fix=f"its options are: {', '.join(allowed) or 'none'}",
        )
    path = Path(path)
    out = Path(out)
    if not path.exists():
        raise FormatError("input does not exist", where=path, fix="check the path")
    if out.exists() and not overwrite:
        raise FormatError("output folder already exists", where=out, fix="choose another --out or pass --overwrite")
    imp = reader(path, **options)
    cases = track(imp.cases, f"importing {fmt}", total=None, enabled=progress)
    if imp.splits is None:
        ds = write_dataset(out, imp.info, cases, overwrite=overwrite)
        if ds.labelled_patients:  # images without labels only (e.g. a DICOM series to predict): nothing to split
            save_splits(ds.splits_path, make_splits(ds.labelled_patients, seed=seed))
    else:
        ds = write_dataset(out, imp.info, cases, splits=imp.splits, overwrite=overwrite)
    for fn in imp.after:
        fn(ds)
    return ds


def _register_builtin_formats() -> None:
    from medseg.data.formats import (  # noqa: F401
        csv_paths,
        dicom,
        image_folder,
        kaggle_gi,
        msd,
        nifti,
        numpy_stacks,
        sunnybrook,
    )


__all__ = ["FORMATS", "FormatError", "Imported", "import_dataset", "list_formats", "format_options"]

_register_builtin_formats()
