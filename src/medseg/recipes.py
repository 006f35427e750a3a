"""Config recipes shipped with the package (``src/medseg/configs/*.yaml``)."""

from __future__ import annotations

from pathlib import Path

from medseg.core.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "configs"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the path of a recipe named without ``.yaml``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = RECIPES_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise ConfigError("config file not found", where=p, fix=f"give a YAML path or a recipe name: {', '.join(list_recipes())}")
