"""How much network each configuration gets: the patch and first-stage width a time budget affords on the device,
from a few measured optimiser steps (``medseg auto``'s ``size`` stage, recorded in ``auto.json``)."""

from __future__ import annotations

import math
from typing import Any

from medseg.core.errors import ConfigError
from medseg.workflows.auto.config import BASE_WIDTHS, CPU_BF16_GAIN, DEFAULT_BUDGET_S, DEFAULT_RUN_S, DEFAULT_STEPS, MIN_STEPS, REFUSE_STEPS, auto_config

#: seconds a training spends outside its budget (workers, first validation, checkpoints), per training
TRAIN_OVERHEAD_S = 8.0
#: a wider network is measured when its step, extrapolated from the narrowest as ∝ width^WIDTH_COST, would fit. The
#: convolutions' cost grows as width², but on a CPU at these widths a step grew 1.4–2.5× per doubling, so the
#: extrapolation is kept optimistic (linear) and every candidate is measured before it is used
WIDTH_COST = 1.0
#: a patch may shrink to this share of the plan's voxels so that a wider network makes MIN_STEPS steps (3D: half of
#: every axis, rounded down to the poolings; measured: on a CPU a wider network on a smaller 3D patch beat a narrower one
#: on a larger, docs/auto.md).
#: A 2D patch (a whole tile or slice, as a rule) shrinks only when even the narrowest network needs it
PATCH_FLOOR = {2: 1.0, 3: 1 / 8}
#: a step of the training loop against the bare step measured on random tensors, per device: on a CPU the loader
#: process shares the cores and Lightning logs (measured: 1.4× on the nuclei proxy in 2D, 1.4–1.5× in 3D on mni152), so
#: step counts and MIN_STEPS mean steps the training really makes. No GPU figure yet: 1
LOOP_STEP = {"cpu": 1.4}


def _slowest_step(per_run: float | None) -> float:
    """The step time that still buys MIN_STEPS steps: in the budget's share, or in DEFAULT_RUN_S by default."""
    return (DEFAULT_RUN_S if per_run is None else per_run) / MIN_STEPS


def _fits(step_s: float, per_run: float | None) -> bool:
    """Whether a step time buys MIN_STEPS steps in the budget's share (no budget: in DEFAULT_RUN_S)."""
    return step_s <= _slowest_step(per_run)


def affordable(auto: Any, narrowest: dict[str, dict[str, Any]], budget_s: float | None, folds: int) -> list[str]:
    """The configurations a time budget can train: each needs REFUSE_STEPS steps at its narrowest width. Those it
    cannot (a 3D patch on a slow CPU) are dropped with a warning, the rest share the budget; none: refused with the
    minimum budget."""
    names = list(narrowest)
    if budget_s is None:
        return names
    left = max(budget_s - auto.elapsed(), 0.0)
    folds = max(folds, 1)
    while names:
        per_run = left / (len(names) * folds) - TRAIN_OVERHEAD_S
        slow = [n for n in names if per_run / narrowest[n]["step_s"] < REFUSE_STEPS]
        if not slow:
            break
        names.remove(max(slow, key=lambda n: narrowest[n]["step_s"]))
    dropped = [n for n in narrowest if n not in names]
    if not names:
        name, m = min(narrowest.items(), key=lambda kv: kv[1]["step_s"])
        need = folds * (REFUSE_STEPS * m["step_s"] + TRAIN_OVERHEAD_S) + auto.elapsed() + 30
        steps = max(left / (len(narrowest) * folds) - TRAIN_OVERHEAD_S, 0.0) / m["step_s"]
        raise ConfigError(
            f"too short: {steps:.0f} optimiser steps per training at {m['step_s']:.2f} s a step",
            where="--time-budget",
            fix=f"give at least {math.ceil(need / 60)}m ({folds} training(s) of the {name} configuration, {REFUSE_STEPS}+ steps each on {m['device']})",
        )
    if dropped:
        why = ", ".join(f"{n} ({narrowest[n]['step_s']:.2f} s a step)" for n in dropped)
        auto.warn(f"the time budget cannot train {why} for {REFUSE_STEPS}+ steps: only {', '.join(names)} is trained; give a longer --time-budget for both")
        auto.decide("configurations", names, f"{', '.join(dropped)} dropped: the budget buys fewer than {REFUSE_STEPS} of its steps")
    return names


def size(auto: Any, plan: dict[str, Any], ds: Any, names: list[str], *, device: str, budget_s: float | None, folds: int) -> dict[str, Any]:
    """Per configuration: the patch and width the budget affords, the measured step time and peak memory, the budget.

    The narrowest width is measured first, at the plan's patch. When that step buys fewer than MIN_STEPS steps (a 3D
    patch sized for a GPU, trained on a CPU), the patch shrinks to what the budget affords and is measured again.
    A wider network is measured only when its step time, extrapolated from the narrowest (∝ width^WIDTH_COST),
    would still fit — on a slow device the expensive widths are never built.
    """
    from medseg.data.plan import shrink_configuration
    from medseg.workflows.auto.estimate import measure_steps

    if auto.done("size"):
        return auto.state["stages"]["size"]["sizes"]
    widths = sorted(BASE_WIDTHS.get(device, BASE_WIDTHS["cpu"]))

    precision: dict[str, str | None] = dict.fromkeys(names)

    def measure(name: str, base: int, conf: dict[str, Any], prec: str | None = None) -> dict[str, Any]:
        prec = prec or precision[name]
        raw, _ = auto_config(ds.root, plan["_file"], plan, name, base_width=base, device=device, conf=conf, precision=prec)
        dims, n_classes = 3 if name == "3d" else 2, len(ds.info.class_names)
        m = measure_steps(raw, spatial_dims=dims, in_channels=ds.info.n_channels, n_classes=n_classes, patch=conf["patch_size"])
        loop = m["step_s"] * LOOP_STEP.get(m["device"], 1.0)
        head = {"base_width": base, "patch_size": list(conf["patch_size"]), "precision": raw["train"]["precision"]}
        return {**head, **m, "bare_step_s": m["step_s"], "step_s": loop}

    def per_run(n_runs: int) -> float | None:
        return None if budget_s is None else max(budget_s - auto.elapsed(), 0.0) / n_runs - TRAIN_OVERHEAD_S

    confs = {name: plan["configurations"][name] for name in names}
    narrowest: dict[str, dict[str, Any]] = {}
    first: dict[str, list[dict[str, Any]]] = {name: [] for name in names}  # measured before the narrowest's last
    for name in names:
        m = measure(name, widths[0], confs[name])
        if device == "cpu":  # bfloat16 where this CPU computes it natively (measured, not guessed from its flags)
            low = measure(name, widths[0], confs[name], "bf16-mixed")
            faster = low["step_s"] <= CPU_BF16_GAIN * m["step_s"]
            first[name].append(m if faster else low)
            if faster:
                precision[name], m = "bf16-mixed", low
        for _ in range(4):  # step time is not quite proportional to the patch: measure, shrink again if still slow
            target = _slowest_step(per_run(len(names) * max(folds, 1)))
            if m["step_s"] <= target:
                break
            small = shrink_configuration(confs[name], 0.9 * target / m["step_s"])
            if small["patch_size"] == confs[name]["patch_size"]:
                break
            confs[name] = small
            first[name].append(m)
            m = measure(name, widths[0], small)
        narrowest[name] = m
    names = affordable(auto, narrowest, budget_s, folds)
    budget = per_run(len(names) * max(folds, 1))
    sizes: dict[str, Any] = {}
    for name in names:
        m = narrowest[name]
        tried = [*first[name], m]
        planned = plan["configurations"][name]
        floor = PATCH_FLOOR[len(planned["patch_size"])]
        per_voxel = m["step_s"] / math.prod(m["patch_size"])  # of the narrowest network
        for base in reversed(widths[1:]):  # widest first, on the largest patch (down to the floor) it affords
            at_plan = per_voxel * math.prod(planned["patch_size"]) * (base / widths[0]) ** WIDTH_COST
            for _ in range(2):  # from the extrapolation, then once more from this width's own measured step
                share = _slowest_step(budget) / at_plan
                if share < floor:
                    break
                conf = planned if share >= 1 else shrink_configuration(planned, max(0.9 * share, floor))
                wide = measure(name, base, conf)
                tried.append(wide)
                if _fits(wide["step_s"], budget):
                    m, confs[name] = wide, conf
                    break
                at_plan = wide["step_s"] / math.prod(conf["patch_size"]) * math.prod(planned["patch_size"])
            if m["base_width"] == base:
                break
        if budget is not None:
            train_s = budget
        elif _fits(m["step_s"], None):
            train_s = DEFAULT_RUN_S
        else:  # a patch that cannot shrink further on a slow device: DEFAULT_STEPS steps, however long (≤ 1 h)
            train_s = min(max(DEFAULT_STEPS * m["step_s"], DEFAULT_BUDGET_S[0]), DEFAULT_BUDGET_S[1])
        sizes[name] = {
            "base_width": m["base_width"],
            "patch_size": list(confs[name]["patch_size"]),
            "configuration": confs[name],
            "precision": m["precision"],
            "step_s": m["step_s"],
            "bare_step_s": m["bare_step_s"],
            "peak_mb": m["peak_mb"],
            "train_s": train_s,
            "steps": int(train_s / m["step_s"]),
            "tried": tried,
        }
    auto.finish("size", sizes=sizes)
    return sizes
