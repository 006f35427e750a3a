"""The importer registry: ``FORMATS`` (name → reader), what a reader returns (:class:`Imported`) and :class:`FormatError`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from medseg.core.case import Case
from medseg.core.errors import FormatError
from medseg.core.registry import Registry
from medseg.data.store import Dataset, DatasetInfo


@dataclass
class Imported:
    """What an importer returns: the description, the cases (lazily) and optional splits.

    Args:
        info: the data set description (its ``cases`` list is filled in by ``write_dataset``).
        cases: the cases, ideally a generator.
        splits: given splits to keep as-is (``None``: patient-grouped 80/10/10 is made).
        after: called with the written ``Dataset`` once it is complete (e.g. NIfTI copies).
    """

    info: DatasetInfo
    cases: Iterable[Case]
    splits: dict[str, Any] | None = None
    after: list[Callable[[Dataset], None]] = field(default_factory=list)


#: name → ``read(path, **options) -> Imported``; ``help`` metadata is shown by ``medseg import --help``.
FORMATS: Registry[Callable[..., Imported]] = Registry("import format", error=FormatError)


def list_formats() -> list[tuple[str, str, list[str]]]:
    """(name, one-line help, option names) for every registered format."""
    return [(n, FORMATS.meta(n).get("help", ""), format_options(n)) for n in FORMATS.names()]


def format_options(name: str) -> list[str]:
    """The keyword options a format accepts (its reader's parameters after ``path``)."""
    return list(inspect.signature(FORMATS.get(name)).parameters)[1:]
