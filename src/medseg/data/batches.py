"""How training and evaluation batches are formed: loader processes, epochs cut from one stream, slice batches."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader


def default_workers() -> int:
    """Loader processes for this machine: one core left for the training loop, at most 12."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(0, min(n - 1, 12))


#: batches of the endless stream (drawn lazily: only as many as the training takes are made)
STREAM_SAMPLES = 2**40


class EpochsOfOneStream:
    """Epochs of ``n`` batches cut from one endless iterator over ``loader``.

    Lightning asks for a new iterator every epoch; a new iterator of a loader with worker processes starts their
    pipeline empty, so each epoch would begin by waiting for its first batches to be made while the network idles —
    a cost short epochs (``medseg auto``'s 50 batches) pay often. Keeping one iterator keeps the workers' prefetch
    full across epoch boundaries.
    """

    def __init__(self, loader: DataLoader, n: int):
        self.loader = loader
        self.n = n
        self._it: Any = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        if self._it is None:
            self._it = iter(self.loader)
        for _ in range(self.n):
            yield next(self._it)


def case_batches(index: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of slice positions that never mix two cases: slices of cases of different sizes cannot be stacked."""
    batches: list[list[int]] = []
    for pos, (case, _) in enumerate(index):
        if not batches or len(batches[-1]) == batch_size or index[batches[-1][0]][0] != case:
            batches.append([])
        batches[-1].append(pos)
    return batches
