from __future__ import annotations

from pathlib import Path

import pytest

from medseg.core.errors import SplitError
from medseg.data.splits import load_splits, make_folds, make_splits, save_splits, select, validate_splits


def _cases(n_patients: int = 20, per_patient: int = 3) -> dict[str, str]:
    return {f"p{p:02d}_c{c}": f"p{p:02d}" for p in range(n_patients) for c in range(per_patient)}


def _patients(ids: list[str], c2p: dict[str, str]) -> set[str]:
    return {c2p[c] for c in ids}


def test_split_groups_patients_and_covers_every_case() -> None:
    c2p = _cases()
    s = make_splits(c2p, (0.8, 0.1, 0.1), seed=3)
    sets = [set(s[k]) for k in ("train", "val", "test")]
    assert set().union(*sets) == set(c2p)
    assert sum(len(x) for x in sets) == len(c2p)
    pats = [_patients(list(x), c2p) for x in sets]
    assert not (pats[0] & pats[1]) and not (pats[0] & pats[2]) and not (pats[1] & pats[2])
    assert [len(p) for p in pats] == [16, 2, 2]


def test_split_is_deterministic_and_seed_dependent() -> None:
    c2p = _cases()
    assert make_splits(c2p, seed=1) == make_splits(c2p, seed=1)
    assert make_splits(c2p, seed=1)["test"] != make_splits(c2p, seed=2)["test"]


def test_small_data_still_gets_every_set() -> None:
    s = make_splits(_cases(n_patients=3), (0.8, 0.1, 0.1))
    assert all(len(s[k]) == 3 for k in ("train", "val", "test"))


def test_kfold_grouped_and_complete() -> None:
    c2p = _cases(10, 2)
    folds = make_folds(c2p, 5, seed=0)
    vals = [set(f["val"]) for f in folds]
    assert set().union(*vals) == set(c2p)
    for f in folds:
        assert not (_patients(f["train"], c2p) & _patients(f["val"], c2p))
    s = make_splits(c2p, seed=0, n_folds=3)
    assert len(s["folds"]) == 3 and select(s, "val", fold=1) == s["folds"][1]["val"]
    assert set(s["folds"][0]["train"] + s["folds"][0]["val"]) == set(s["train"] + s["val"])


def test_bad_ratios_refused() -> None:
    with pytest.raises(SplitError, match="sum"):
        make_splits(_cases(), (0.8, 0.1, 0.2))


def test_patient_in_two_sets_refused(tmp_path: Path) -> None:
    c2p = _cases(4, 2)
    split = {"train": ["p00_c0", "p01_c0", "p01_c1"], "val": ["p00_c1"], "test": ["p02_c0"]}
    with pytest.raises(SplitError, match=r"patient 'p00' is in both train and val"):
        validate_splits(split, c2p)
    save_splits(tmp_path / "s.json", split)
    with pytest.raises(SplitError, match=r"s.json: patient 'p00'"):
        load_splits(tmp_path / "s.json", c2p)


def test_unknown_case_and_duplicate_case_refused() -> None:
    c2p = _cases(4, 2)
    with pytest.raises(SplitError, match="unknown case 'nope'"):
        validate_splits({"train": ["nope"], "val": [], "test": []}, c2p)
    with pytest.raises(SplitError, match="in both train and test"):
        validate_splits({"train": ["p00_c0"], "val": [], "test": ["p00_c0"]}, c2p)


def test_saved_split_round_trips(tmp_path: Path) -> None:
    c2p = _cases()
    s = make_splits(c2p, seed=5, n_folds=2)
    save_splits(tmp_path / "splits.json", s)
    assert load_splits(tmp_path / "splits.json", c2p) == s


def test_patient_in_two_sets_of_one_fold_refused() -> None:
    owners = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    ok = {"train": ["a1", "a2", "b1"], "val": ["c1"], "test": []}
    folds = [{"train": ["a1", "b1"], "val": ["a2", "c1"]}]  # patient A split across fold 0's train and val
    with pytest.raises(SplitError, match=r"patient 'A' is in both folds\[0\]\.train and folds\[0\]\.val"):
        validate_splits({**ok, "folds": folds}, owners)
