"""The New run form: fields the page sends → a validated :class:`~medseg.config.Config` → the job's command.

Nothing the page sends becomes part of a command line as text: the form's values are checked here and by
the config models (pydantic; an error names the field), the config is written as YAML inside the
workspace, and the command is assembled from that file's path and the run folder's path.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medseg.core.errors import ConfigError, MedsegError
from medseg.demo.runs import DemoError
from medseg.demo.workspace import Workspace, check_name

#: the recipe choices: the defaults, ``auto`` (``medseg auto``: a config planned from the data set) and the shipped recipes
RECIPE_NONE = "defaults"
RECIPE_AUTO = "auto"
AUGMENT_PRESETS = ("none", "light", "default", "heavy")
#: what the New run page shows instead of a config when the recipe is ``auto``
AUTO_NOTE = """\
# medseg auto plans the configuration from the data set (plan.json), sizes the network to this machine
# and the time budget, trains the 2D and 3D candidates and keeps the better one on validation;
# every decision and its reason goes to {out}/auto.json.
# Used from this form: the data set, the run name and the time budget.
# Not used: model, recipe fields, epochs, iterations, learning rate, batch size, loss, augmentation, weights.
data: {data}
out: {out}
time_budget: {budget}
"""


def recipe_choices() -> list[str]:
    from medseg.recipes import list_recipes

    return [RECIPE_NONE, RECIPE_AUTO, *list_recipes()]


def model_choices(dims: int | None) -> list[str]:
    """Registered models for a data set of ``dims`` spatial dimensions (a 3D data set also trains 2D models on slices)."""
    from medseg.models.catalog import list_models

    return list_models(dims)


def loss_choices() -> list[str]:
    from medseg.losses import LOSSES

    return LOSSES.names()


@dataclass
class RunForm:
    """The New run form, as the page sends it (every field checked by :meth:`config`)."""

    name: str
    dataset: str
    model: str = "unet"
    recipe: str = RECIPE_NONE
    epochs: int | None = 10
    time_budget: str = ""
    lr: float | None = 1e-3
    batch_size: int | None = 8
    loss: str = "dice_ce"
    augment: str = "light"
    pretrained: str = ""
    iterations_per_epoch: int | None = None
    model_params: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def raw(self, ws: Workspace) -> dict[str, Any]:
        """The config mapping (before validation)."""
        from medseg.config import set_dotted
        from medseg.recipes import list_recipes, resolve_config_path

        raw: dict[str, Any] = {}
        if self.recipe and self.recipe != RECIPE_NONE:
            if self.recipe not in list_recipes():
                raise DemoError(f"unknown recipe {self.recipe!r}", where="recipe", fix=f"choose one of: {', '.join(recipe_choices())}")
            raw = yaml.safe_load(resolve_config_path(self.recipe).read_text(encoding="utf-8")) or {}
        raw = copy.deepcopy(raw)
        data = raw.setdefault("data", {})
        data.pop("builtin", None)
        data["dataset"] = str(ws.dataset_path(self.dataset))
        model = raw.setdefault("model", {})
        if model.get("name") != self.model:
            model["params"] = {}
        model["name"] = self.model
        if self.model_params.strip():
            try:
                params = yaml.safe_load(self.model_params)
            except yaml.YAMLError:
                raise ConfigError("model parameters are not valid YAML", where="model.params", fix="write e.g. {channels: [8, 16]}") from None
            if not isinstance(params, dict):
                raise ConfigError("model parameters must be a mapping", where="model.params", fix="write e.g. {channels: [8, 16]}")
            model.setdefault("params", {}).update(params)
        if self.pretrained:
            weights = ws.inside(self.pretrained, "weights")
            if not weights.is_file():
                raise DemoError("not a weights file", where=f"weights/{self.pretrained}", fix="pick a file from the list")
            model.setdefault("params", {})["pretrained"] = str(weights)
        raw["name"] = check_name(self.name, "run")
        values = {
            "train.epochs": self.epochs,
            "train.lr": self.lr,
            "data.batch_size": self.batch_size,
            "train.loss": self.loss,
            "data.augment": self.augment,
            "train.iterations_per_epoch": self.iterations_per_epoch,
            **self.extra,
        }
        if self.time_budget.strip():
            values["train.time_budget"] = self.time_budget.strip()
        for key, value in values.items():
            if value is None or value == "":
                continue
            if isinstance(value, float) and value.is_integer() and key in ("train.epochs", "data.batch_size", "train.iterations_per_epoch"):
                value = int(value)
            set_dotted(raw, key.split("."), value)
        return raw

    def config(self, ws: Workspace) -> Any:
        """The validated config; a bad value raises a ``ConfigError`` naming its field."""
        from medseg.config import config_from_dict
        from medseg.losses import LOSSES
        from medseg.models.catalog import list_models

        if self.model not in list_models():
            raise ConfigError(f"unknown model {self.model!r}", where="model.name", fix="pick one from the list")
        if self.loss not in LOSSES.names():
            raise ConfigError(f"unknown loss {self.loss!r}", where="train.loss", fix=f"one of: {', '.join(LOSSES.names())}")
        return config_from_dict(self.raw(ws), source="the New run form")

    def plan(self, ws: Workspace) -> dict[str, Any]:
        """Everything the page shows and the job needs: kind, config, YAML, file paths, argv and the command line."""
        if self.recipe == RECIPE_AUTO:
            return self.auto_plan(ws)
        cfg = self.config(ws)
        out = ws.new_path(cfg.name, "runs", "run")
        config_file = ws.root / "jobs" / "configs" / f"{cfg.name}.yaml"
        argv = train_argv(ws, config_file, out)
        plan = {"kind": "train", "name": cfg.name, "config": cfg, "yaml": cfg.to_yaml(), "config_file": config_file}
        return {**plan, "out": out, "argv": argv, "command": command_line(argv)}

    def auto_plan(self, ws: Workspace) -> dict[str, Any]:
        """``medseg auto datasets/NAME --out runs/RUN [--time-budget Ns]``: only the data set, the name and the budget are used.

        The budget is parsed here (an error names ``train.time_budget``) and passed on as whole seconds,
        so the command holds a number computed from the field, not the field's text.
        """
        from medseg.config import parse_duration

        name = check_name(self.name, "run")
        data = ws.dataset_path(self.dataset)
        seconds = None
        if self.time_budget.strip():
            try:
                seconds = max(1, round(parse_duration(self.time_budget.strip())))
            except ValueError as e:
                where, fix = "the New run form", "write e.g. 90s, 10m or 1.5h in 'train.time_budget' (empty: medseg auto's default)"
                raise ConfigError(f"field 'train.time_budget': {e}", where=where, fix=fix) from None
        out = ws.new_path(name, "runs", "run")
        argv = cli_argv("auto", _rel(ws, data), "--out", _rel(ws, out), *(["--time-budget", f"{seconds}s"] if seconds else []), "--no-progress")
        budget = f"{seconds}s" if seconds else "default (1000 optimiser steps' time, at least 1 minute)"
        text = AUTO_NOTE.format(data=_rel(ws, data), out=_rel(ws, out), budget=budget)
        return {"kind": "auto", "name": name, "config": None, "yaml": text, "config_file": None, "out": out, "argv": argv, "command": command_line(argv)}


def cli_argv(*args: str | Path) -> list[str]:
    """``python -m medseg.cli ARGS`` (the CLI of this very installation)."""
    return [sys.executable, "-m", "medseg.cli", *[str(a) for a in args]]


def train_argv(ws: Workspace, config_file: Path, out: Path) -> list[str]:
    return cli_argv("train", _rel(ws, config_file), "--out", _rel(ws, out), "--no-progress")


def resume_argv(ws: Workspace, run: Path) -> list[str]:
    return cli_argv("train", "--resume", _rel(ws, run), "--no-progress")


def _rel(ws: Workspace, path: Path) -> str:
    return Path(path).relative_to(ws.root).as_posix()


def command_line(argv: list[str]) -> str:
    """The command as a user types it, from the workspace folder."""
    import shlex

    return "medseg " + " ".join(shlex.quote(a) for a in argv[3:])


def validate_message(form: RunForm, ws: Workspace) -> tuple[str, str, str]:
    """(message, YAML, command line) for the page; the message is empty when the form is valid."""
    try:
        p = form.plan(ws)
    except MedsegError as e:
        return e.one_line(), "", ""
    return "", p["yaml"], p["command"]


def write_config(plan: dict[str, Any]) -> Path | None:
    """Write the plan's config where its command reads it (``None``: ``medseg auto`` needs none)."""
    if plan["config"] is None:
        return None
    path: Path = plan["config_file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    return plan["config"].save(path)


__all__ = ["RECIPE_AUTO", "RunForm", "cli_argv", "command_line", "resume_argv", "train_argv", "validate_message", "write_config"]
