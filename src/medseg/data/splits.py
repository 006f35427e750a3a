"""Patient-grouped splits: train/val/test by ratio and k-fold, seeded, saved as ``splits.json``.

``splits.json``::

    {"seed": 0, "ratios": [0.8, 0.1, 0.1],
     "train": [case ids], "val": [...], "test": [...],
     "folds": [{"train": [...], "val": [...]}, ...]}      # optional, k-fold inside train+val

All cases of one patient always land in the same set; a split that breaks this is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import write_json
from medseg.core.errors import SplitError

SETS = ("train", "val", "test")


def _patients_in_order(case_to_patient: Mapping[str, str]) -> list[str]:
    return sorted(set(case_to_patient.values()))


def _cases_of(patients: Sequence[str], case_to_patient: Mapping[str, str]) -> list[str]:
    wanted = set(patients)
    return sorted(c for c, p in case_to_patient.items() if p in wanted)


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder allocation of ``n`` patients to sets; every non-zero ratio gets ≥ 1 if possible."""
    raw = np.asarray(ratios, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0 and n >= sum(1 for x in ratios if x > 0):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def make_splits(
    case_to_patient: Mapping[str, str],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    n_folds: int = 0,
) -> dict[str, Any]:
    """Split cases into train/val/test by patient.

    Args:
        case_to_patient: case id → patient id.
        ratios: fractions of *patients* for train, val and test; must sum to 1.
        seed: shuffling seed; the same inputs and seed always give the same split.
        n_folds: if ≥ 2, also build k folds (grouped by patient) over train + val.

    Returns:
        The split dictionary saved as ``splits.json``.
    """
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise SplitError(f"split ratios {ratios} must be three non-negative numbers summing to 1", where="data.split.ratios", fix="e.g. [0.8, 0.1, 0.1]")
    patients = _patients_in_order(case_to_patient)
    if not patients:
        raise SplitError("no labelled cases to split", where="data set", fix="import cases with labels (images alone can only be predicted)")
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    counts = _allocate(len(order), ratios)
    out: dict[str, Any] = {"seed": seed, "ratios": ratios}
    start = 0
    for name, k in zip(SETS, counts, strict=True):
        out[name] = _cases_of(order[start : start + k], case_to_patient)
        start += k
    if n_folds:
        out["folds"] = make_folds({c: case_to_patient[c] for c in out["train"] + out["val"]}, n_folds, seed)
    return out


def make_folds(case_to_patient: Mapping[str, str], n_folds: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """K folds grouped by patient; fold ``i`` validates on the ``i``-th group of patients."""
    patients = _patients_in_order(case_to_patient)
    if n_folds < 2 or n_folds > len(patients):
        raise SplitError(f"cannot make {n_folds} folds from {len(patients)} patients", where="data.split.n_folds", fix=f"use 2…{len(patients)} folds")
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    groups = [order[i::n_folds] for i in range(n_folds)]
    folds = []
    for i in range(n_folds):
        val = _cases_of(groups[i], case_to_patient)
        train = _cases_of([p for j, g in enumerate(groups) if j != i for p in g], case_to_patient)
        folds.append({"train": train, "val": val})
    return folds


def validate_splits(splits: Mapping[str, Any], case_to_patient: Mapping[str, str], where: str | Path = "splits.json") -> None:
    """Refuse unknown cases, a case in two sets, and a patient in two sets (also inside each fold)."""
    groups: list[tuple[str, Mapping[str, Any]]] = [("", splits)]
    groups += [(f"folds[{i}].", f) for i, f in enumerate(splits.get("folds", []) or [])]
    for prefix, group in groups:
        owner: dict[str, str] = {}
        seen_case: dict[str, str] = {}
        for name in SETS:
            for cid in group.get(name, []) or []:
                if cid not in case_to_patient:
                    raise SplitError(
                        f"{prefix}{name} names unknown case {cid!r}", where=where, fix="use case ids listed in dataset.json (see `medseg inspect`)"
                    )
                if cid in seen_case:
                    raise SplitError(f"case {cid!r} is in both {seen_case[cid]} and {prefix}{name}", where=where, fix="put each case in one set")
                seen_case[cid] = f"{prefix}{name}"
                pat = case_to_patient[cid]
                if pat in owner and owner[pat] != f"{prefix}{name}":
                    raise SplitError(
                        f"patient {pat!r} is in both {owner[pat]} and {prefix}{name} (case {cid!r})",
                        where=where,
                        fix="keep all cases of a patient in one set, or let medseg make the split",
                    )
                owner[pat] = f"{prefix}{name}"


def save_splits(path: str | Path, splits: Mapping[str, Any]) -> Path:
    return write_json(path, dict(splits))


def load_splits(path: str | Path, case_to_patient: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read ``splits.json`` (validated against the data set when ``case_to_patient`` is given)."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitError("split file not found", where=path, fix="omit it to let medseg make one, or give the right path") from None
    except json.JSONDecodeError as e:
        raise SplitError(f"invalid JSON ({e.msg} at line {e.lineno})", where=path, fix="repair the file") from None
    if not isinstance(splits, dict) or not any(k in splits for k in SETS):
        raise SplitError("expected an object with 'train', 'val' and 'test' lists", where=path, fix="see docs/formats.md")
    if case_to_patient is not None:
        validate_splits(splits, case_to_patient, where=path)
    return splits


def select(splits: Mapping[str, Any], name: str, fold: int | None = None) -> list[str]:
    """Case ids of one set; with ``fold`` the train/val sets come from that fold."""
    if fold is not None and name in ("train", "val"):
        folds = splits.get("folds") or []
        if not 0 <= fold < len(folds):
            raise SplitError(
                f"fold {fold} does not exist ({len(folds)} folds)", where="data.split.fold", fix="set data.split.n_folds or choose an existing fold"
            )
        return list(folds[fold][name])
    if name not in SETS:
        raise SplitError(f"unknown split {name!r}", where="--split", fix="use train, val or test")
    if name == "val" and not splits.get("val") and splits.get("val_on_train"):  # one labelled patient: nothing is held out
        return list(splits.get("train", []))
    return list(splits.get(name, []))
