"""Commands that describe what medseg offers: models, config."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from medseg.cli.app import SetOpt, command, console
from medseg.core.errors import MedsegError


@command("models")
def models_cmd(
    name: Annotated[str | None, typer.Argument(help="a model to describe (keyword arguments, weights)")] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="only models for 2D or 3D data")] = None,
) -> None:
    """List the registered models: name, 2D/3D, parameters (1 channel in, 3 classes), description, paper."""
    import inspect

    from medseg.models import MODELS, list_models
    from medseg.models.complexity import REFERENCE_IN_CHANNELS, REFERENCE_NUM_CLASSES, format_count, reference_parameters

    def params(n: str) -> str:
        m = MODELS.meta(n)
        if m["training"] == "fit":
            return "— (fit)"
        try:
            return " / ".join(f"{format_count(reference_parameters(n, d))}" for d in m["dims"] if dims in (None, d))
        except MedsegError as e:  # e.g. a missing optional package
            return f"n/a ({e.fix or e.problem})"

    if name is not None:
        m = MODELS.meta(name)  # unknown names fail here with close matches
        t = Table(show_header=False, title=name)
        t.add_row("description", m["description"])
        t.add_row("paper", m["paper"])
        t.add_row("dims", "/".join(f"{d}D" for d in m["dims"]))
        ref = f"{REFERENCE_IN_CHANNELS} channel in, {REFERENCE_NUM_CLASSES} classes"
        t.add_row("parameters", f"{params(name)}  ({'/'.join(f'{d}D' for d in m['dims'])}, {ref})")
        t.add_row("training", "model.fit(images, labels) — no optimiser" if m["training"] == "fit" else "back-propagation")
        t.add_row("deep supervision", "n_deep_supervision: int (training mode returns a list, full resolution first)" if m["deep_supervision"] else "no")
        t.add_row("pretrained weights", m["weights"] or "none published; a checkpoint of this model via pretrained: PATH")
        sig = inspect.signature(MODELS.get(name))
        for p in list(sig.parameters.values())[3:]:
            t.add_row(f"  {p.name}", repr(p.default))
        if m["training"] == "gradient":
            t.add_row("  pretrained", "None — a local weights file or Hugging Face folder")
            t.add_row("  pretrained_channels", "'sum' — or 'replicate' (1-channel input repeated to RGB)")
        console.print(t)
        return
    t = Table(title=f"Models — parameters with {REFERENCE_IN_CHANNELS} input channel and {REFERENCE_NUM_CLASSES} classes (2D / 3D)")
    for col in ("name", "dims", "parameters", "description", "paper"):
        t.add_column(col, justify="right" if col == "parameters" else "left", no_wrap=col in ("name", "dims", "parameters"))
    for n in list_models(spatial_dims=dims):
        m = MODELS.meta(n)
        t.add_row(n, "/".join(f"{d}D" for d in m["dims"]), params(n), m["description"], m["paper"].split(",")[0])
    console.print(t)
    console.print("Details and keyword arguments: [bold]medseg models NAME[/]; in a config: model.name: NAME, model.params: {...}")


@command("config")
def config_cmd(
    config: Annotated[str | None, typer.Argument(help="YAML config or recipe name; omit for the defaults")] = None,
    set_: SetOpt = None,
    list_: Annotated[bool, typer.Option("--list", help="list the shipped recipes: configs and comparisons")] = False,
) -> None:
    """Print a resolved config (every valid key with its value; a comparison recipe's base config), or list the recipes."""
    from medseg.config import load_config
    from medseg.recipes import list_comparisons, list_recipes, resolve_config_path

    if list_:
        for r in list_recipes():
            console.print(f"{r}  (config)", highlight=False, soft_wrap=True)
        for r, text in list_comparisons():
            console.print(f"{r}  (comparison: {text})", highlight=False, soft_wrap=True)
        return
    if config and config in dict(list_comparisons()):  # a comparison recipe: its base config
        from medseg.config import config_from_dict
        from medseg.recipes import resolve_sweep_source

        base, _ = resolve_sweep_source(config, list(set_ or []))
        sys.stdout.write(config_from_dict(base).to_yaml())
        return
    cfg = load_config(resolve_config_path(config) if config else None, list(set_ or []))
    sys.stdout.write(cfg.to_yaml())
