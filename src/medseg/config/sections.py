"""The data, model and train sections of a config (pydantic models whose fields are the hyperparameters)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(Section):
    """How cases are divided into train/val/test (always grouped by patient)."""

    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    n_folds: int = Field(0, ge=0, description="≥ 2 builds k folds over train+val")
    fold: int | None = Field(None, ge=0, description="train/validate on this fold")
    file: str | None = Field(None, description="a splits.json to use instead of the data set's")

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be non-negative and sum to 1 (got {list(v)}, sum {sum(v):g})")
        return v


#: the largest patch / resize / padding size in voxels (512³): a typo must not ask for terabytes
MAX_SIZE_VOXELS = 2**27


def check_size(v: list[int] | None, what: str) -> list[int] | None:
    """A spatial size: 2 or 3 whole numbers, each at least 1, at most 512³ voxels (``None`` stays ``None``)."""
    if v is None:
        return v
    if len(v) not in (2, 3) or any(int(s) < 1 for s in v):
        raise ValueError(f"{what} must be 2 or 3 whole numbers ≥ 1, one per spatial axis (got {list(v)})")
    if math.prod(v) > MAX_SIZE_VOXELS:
        raise ValueError(f"{what} {list(v)} holds {math.prod(v):,} voxels, more than {MAX_SIZE_VOXELS:,} (512³)")
    return v


class PreprocessConfig(Section):
    """Geometry and intensity preprocessing, cached once per plan (``medseg prepare``); see docs/pipeline.md.

    With ``enabled: false`` (the default) each case is z-scored on its own grid in memory, nothing is cached.
    """

    enabled: bool = Field(False, description="preprocess into a memory-mapped .npy cache (auto-built by train if missing)")
    orientation: Literal["none", "RAS"] = Field("none", description="reorient volumes so array axes follow R, A, S")
    spacing: list[float] | Literal["plan"] | None = Field(None, description="target spacing in mm per array axis; 'plan' = the plan's; null = keep")
    interpolation: Literal["linear", "cubic"] = Field("linear", description="image resampling (labels: nearest)")
    anisotropy_threshold: float = Field(3.0, gt=1, description="above this spacing ratio the coarse axis is resampled separately, nearest")
    crop: Literal["none", "nonzero", "foreground"] = Field("none", description="crop to the non-zero image box or the label's foreground box")
    crop_margin: int = Field(0, ge=0, description="voxels kept around the crop box")
    normalize: Literal["auto", "ct", "zscore", "zscore_nonzero", "clip01", "none"] = Field("auto", description="auto = by modality (CT: ct, else zscore)")
    clip_percentiles: tuple[float, float] = Field((0.5, 99.5), description="ct: data set foreground percentiles; clip01: per-case percentiles")
    resize: list[int] | None = Field(None, description="resize every case to this spatial size (after resampling); 2 sizes with data.slices resize each slice")
    pad_to: list[int] | None = Field(None, description="pad (centred, zeros) to at least this spatial size")
    cache_dir: str | None = Field(None, description="the cache folder (default: <data set>/preprocessed/<spec hash>); one of another spec is refused")

    @field_validator("resize", "pad_to")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        return check_size(v, "a size")

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: list[float] | str | None) -> list[float] | str | None:
        if isinstance(v, list) and (len(v) not in (2, 3) or not all(0 < s < float("inf") for s in v)):
            raise ValueError(f"spacing must be 2 or 3 positive millimetre values, one per spatial axis (got {v})")
        return v

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100 (got {list(v)})")
        return v


class AugmentConfig(Section):
    """Augmentation preset plus per-transform overrides, e.g. ``{rotate: {prob: 0.5, range: 15}, elastic: {prob: 0}}``."""

    preset: Literal["none", "light", "default", "heavy"] | None = Field(None, description="null = data.augment")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description="transform name → its parameters (see docs/pipeline.md)")


class DataConfig(Section):
    """Which data set, how it is split, and how batches are drawn."""

    dataset: str = Field("phantom2d", description="a built-in data set name or a data set folder")
    builtin: dict[str, Any] = Field(default_factory=dict, description="generator options of a built-in data set")
    cache_dir: str | None = Field(None, description="where built-in data sets are written (default: $MEDSEG_CACHE or ~/.cache/medseg)")
    split: SplitConfig = Field(default_factory=SplitConfig)
    patch_size: list[int] | None = Field(None, description="training crop; null = the whole image (or the plan's patch when data.plan is set)")
    batch_size: int = Field(8, ge=1)
    num_workers: int | Literal["auto"] = Field(0, description="loader processes; auto = from the CPU count")
    augment: Literal["none", "light", "default", "heavy"] = "light"
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    plan: str | None = Field(None, description="a plan.json (from `medseg prepare`); its spacing, normalisation and patch fill unset fields")
    configuration: Literal["auto", "2d", "3d"] = Field("auto", description="which plan configuration to use; auto = the plan's recommendation")
    foreground_oversample: float = Field(1 / 3, ge=0, le=1, description="fraction of patches centred on a foreground voxel")
    class_balanced: bool = Field(False, description="foreground patches pick a class uniformly (rare classes as often as common ones)")
    slices: bool = Field(False, description="train a 2D model on slices of a 3D data set")
    slice_axis: int = Field(0, ge=0, le=2, description="the axis cut into slices")
    context_slices: int = Field(0, ge=0, description="2.5D: this many neighbouring slices on each side become extra channels")
    ignore_label: int | None = Field(
        None,
        ge=1,
        description="the label value (the highest class) of unannotated voxels: left out of the loss, metrics, validation Dice and "
        "foreground sampling; default a class named 'ignore'",
    )
    regions: dict[str, int | list[int]] | None = Field(
        None,
        description="regions over a label-map data set's values, as nnU-Net declares them: name → the label values whose union it is "
        '(a number is a one-value region, keyed "3" in summary_nnunet.json; [3] is keyed "(3,)"). Trained with one sigmoid '
        "output each, scored per region, written back as a label map in data.regions_class_order",
    )
    regions_class_order: list[int] | None = Field(
        None, description="with data.regions: the label value each region is painted with in written label maps (later regions overwrite earlier ones)"
    )

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, v: list[int] | None) -> list[int] | None:
        return check_size(v, "patch_size")

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("num_workers must be >= 0 or 'auto'")
        return v


class ModelConfig(Section):
    """The network: a registered name plus its keyword arguments (see `medseg models`)."""

    name: str = "unet"
    params: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Section):
    """Optimisation, schedule, precision, devices, stopping and records."""

    epochs: int = Field(30, gt=0)
    iterations_per_epoch: int | Literal["auto"] | None = Field(
        "auto", description="batches per epoch (drawn with replacement); null = one pass over train; auto = one pass, more to reach min_iterations"
    )
    min_iterations: int = Field(500, ge=0, description="auto iterations_per_epoch: the whole training makes at least this many optimiser steps")
    iterations: int | None = Field(None, ge=1, description="total optimiser steps (replaces epochs: epochs = iterations / iterations_per_epoch)")
    time_budget: str | None = Field(
        None, description="wall-clock training budget (e.g. 90s, 10m, 1.5h): the number of epochs and the learning-rate schedule are fitted to it"
    )
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    momentum: float = Field(0.99, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = True
    scheduler: Literal["none", "cosine", "poly", "exponential", "plateau", "step"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up before the schedule")
    min_lr: float = Field(0.0, ge=0, description="floor of cosine / poly schedules")
    lr_gamma: float = Field(0.985, gt=0, le=1, description="exponential: lr × gamma per epoch; step: factor per step")
    poly_power: float = Field(0.9, gt=0)
    step_size: int = Field(30, ge=1, description="step schedule: epochs between decays")
    plateau_patience: int = Field(10, ge=1)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    accumulate_grad_batches: int = Field(1, ge=1, description="optimizer step every N batches")
    loss: str = "dice_ce"
    loss_params: dict[str, Any] = Field(default_factory=dict)
    output: Literal["auto", "softmax", "sigmoid"] = Field("auto", description="softmax over classes or sigmoid per label; auto = from the data set")
    deep_supervision_weights: list[float] | None = Field(None, description="per output, full resolution first; default 1/2^i normalised")
    seed: int = 0
    deterministic: bool = False
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    devices: int | str = Field(1, description="devices per node (an int, or 'auto')")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ddp_spawn, ...")
    precision: Literal["32", "16-mixed", "bf16-mixed"] = Field(
        "32", description="32, 16-mixed (CUDA) or bf16-mixed (CUDA, and CPUs with native bfloat16: faster there, docs/training.md)"
    )
    channels_last: bool = Field(True, description="channels-last memory format for 2D models on GPU")
    compile: bool = Field(False, description="torch.compile the network")
    cudnn_benchmark: bool = True
    val_every: int = Field(1, ge=1)
    early_stop_patience: int | None = Field(None, ge=1)
    max_time: str | None = Field(None, description="wall-clock budget DD:HH:MM:SS or HH:MM:SS")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores)")
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = Field(default_factory=lambda: ["csv"])
    snapshot_case: str | None = Field(None, description="case whose prediction is saved every epoch for the training GIF (default: the first of its split)")
    snapshot_split: Literal["val", "test", "train"] = Field("val", description="split snapshot_case is taken from (test: unseen data, as study 000)")

    @field_validator("iterations_per_epoch")
    @classmethod
    def _positive_iterations(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("iterations_per_epoch must be >= 1, 'auto' or null")
        return v

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("max_time")
    @classmethod
    def _time_format(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split(":")
        if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
            raise ValueError(f"max_time must be HH:MM:SS or DD:HH:MM:SS, got {v!r}")
        return v


def parse_duration(text: str | float) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h`` or ``HH:MM:SS``; raises ``ValueError`` on anything else."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        t = str(text).strip().lower()
        units = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
        if ":" in t:
            parts = t.split(":")
            if len(parts) != 3 or not all(p.replace(".", "", 1).isdigit() for p in parts):
                raise ValueError(f"a duration is 90s, 10m, 1.5h or HH:MM:SS, got {text!r}")
            value = float(parts[0]) * 3600 + float(parts[1]) * 60 + float(parts[2])
        else:
            unit = next((u for u in ("min", "s", "m", "h") if t.endswith(u)), "")
            number = t[: len(t) - len(unit)] if unit else t
            try:
                value = float(number) * units.get(unit, 1.0)
            except ValueError:
                raise ValueError(f"a duration is 90s, 10m, 1.5h or HH:MM:SS, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return value
