"""``medseg prepare``: plan a data set (``plan.json``) and build the preprocessing cache that training reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.core.errors import ConfigError
from medseg.data.preprocessing import default_cache_dir, prepare, ras_spacings, resolve_spec

#: preprocessing used by ``medseg prepare DATASET`` when no config is given: the plan decides
PLAN_DEFAULTS: dict[str, Any] = {"enabled": True, "orientation": "RAS", "spacing": "plan", "crop": "nonzero", "normalize": "auto"}


def prepare_dataset(
    config: Any,
    *,
    plan_path: str | Path | None = None,
    gpu_memory_gb: float = 8.0,
    cpu_cores: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    fingerprint: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Path, Path]:
    """``medseg prepare``: fingerprint, plan (``plan.json`` in the data set folder) and the cache.

    Args:
        config: the run config; its ``data.preprocess`` section says what to do (``enabled`` is implied).
        plan_path: an existing ``plan.json`` to use instead of planning (also ``data.plan``).
        gpu_memory_gb: GPU memory budget of the plan.
        cpu_cores: CPU budget of the plan (default: this machine's cores).
        overwrite: rebuild a cache that exists (also one built with another spec).
        progress: show progress bars.
        fingerprint: the data set's fingerprint when already computed.

    Returns:
        ``(plan, plan_file, cache_folder)``.
    """
    from medseg.data.inspect import fingerprint as make_fingerprint
    from medseg.data.plan import PLAN_FILE, load_plan, make_plan, write_plan
    from medseg.data.source import open_dataset

    ds = open_dataset(config)
    fp = fingerprint
    plan_src = plan_path or config.data.plan
    if plan_src:
        plan = load_plan(plan_src)
        if int(plan.get("dims", ds.info.dims)) != ds.info.dims:
            raise ConfigError(f"the plan is for {plan.get('dims')}D data but the data set is {ds.info.dims}D", where=plan_src, fix="plan this data set")
        plan_file = Path(plan_src)
    else:
        fp = fp or make_fingerprint(ds, progress=progress)
        plan = make_plan(fp, dims=ds.info.dims, gpu_memory_gb=gpu_memory_gb, cpu_cores=cpu_cores, ras_spacings=ras_spacings(ds) if ds.info.dims == 3 else None)
        plan_file = write_plan(plan, ds.root / PLAN_FILE)
    spec = resolve_spec(config, ds, plan, fp)
    pc = config.data.preprocess
    out = Path(pc.cache_dir) if pc.cache_dir else default_cache_dir(ds, spec)
    cache = prepare(ds, spec, out=out, overwrite=overwrite, progress=progress)
    return plan, plan_file, cache
