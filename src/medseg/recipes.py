"""Config recipes shipped with the package (``src/medseg/configs/*.yaml``)."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from medseg.config import RECIPES_DIR, config_from_dict
from medseg.core.errors import ConfigError


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def list_comparisons() -> list[tuple[str, str]]:
    """(name, description) of every shipped comparison recipe (``configs/comparisons/*.yaml``)."""
    out = []
    for p in sorted((RECIPES_DIR / "comparisons").glob("*.yaml")):
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        out.append((p.stem, str(raw.get("description", ""))))
    return out


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the path of a recipe named without ``.yaml``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = RECIPES_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError("config file not found", where=p, fix=f"give a YAML path or a recipe name: {', '.join(list_recipes())}")


def load_sweep_recipe(path: str | Path) -> dict[str, Any]:
    """Read a comparison recipe (``configs/comparisons/*.yaml``): base, set, models, grid, seeds, optuna."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML ({str(e).splitlines()[0]})", where=p, fix="repair the YAML syntax") from None
    allowed = {"description", "base", "set", "models", "grid", "points", "seeds", "optuna", "compare", "name"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(allowed), n=2)
        fix = f"did you mean {', '.join(close)}?" if close else f"use {', '.join(sorted(allowed))}"
        raise ConfigError(f"unknown recipe key '{unknown[0]}'", where=p, fix=fix)
    return raw


def resolve_sweep_source(source: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A config (path or recipe) or a comparison recipe → (base config dict, recipe dict).

    The base dict has the ``--set`` overrides applied and is validated once.
    """
    from medseg.config import apply_overrides
    from medseg.recipes import RECIPES_DIR, resolve_config_path

    p = Path(source)
    cand = [p, RECIPES_DIR / "comparisons" / f"{source}.yaml"]
    recipe_path = next((c for c in cand if c.is_file() and "base" in (yaml.safe_load(c.read_text(encoding="utf-8")) or {})), None)
    recipe: dict[str, Any] = {}
    if recipe_path is not None:
        recipe = load_sweep_recipe(recipe_path)
        b = recipe["base"]
        if isinstance(b, dict):
            base = copy.deepcopy(b)
        else:
            bp = Path(b)
            if not bp.is_absolute() and (recipe_path.parent / bp).is_file():
                bp = recipe_path.parent / bp
            base = yaml.safe_load(resolve_config_path(bp if bp.is_file() else b).read_text(encoding="utf-8")) or {}
        base = apply_overrides(base, [str(s) for s in recipe.get("set") or []])
        source_name = str(recipe_path)
    else:
        cfg_path = resolve_config_path(source)
        base = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        source_name = str(cfg_path)
    base = apply_overrides(base, list(overrides or []))
    config_from_dict(base, source=source_name)  # fail early on a bad base
    return base, recipe


def recipe_points(recipe: dict[str, Any], grid: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """The runs of a comparison recipe: every combination of ``grid`` (the recipe's, updated by ``grid``),
    each combined with every entry of ``points`` (settings that go together, e.g. a loss and its arguments).

    A key given in both takes the grid's value (duplicates are dropped). Without ``points`` this is the plain grid.
    """
    import itertools

    space = {k: list(v) for k, v in (recipe.get("grid") or {}).items()}
    space.update(grid or {})
    combos = [dict(zip(space, c, strict=True)) for c in itertools.product(*space.values())] if space else [{}]
    points = [dict(p) for p in recipe.get("points") or []] or [{}]
    for p in points:
        if not isinstance(p, dict):
            raise ConfigError(f"a point must map keys to values, got {p!r}", where="points", fix="write e.g. - {train.loss: dice}")
    out: list[dict[str, Any]] = []
    for c in combos:
        for p in points:
            q = {**p, **c}
            if q not in out:
                out.append(q)
    return out
