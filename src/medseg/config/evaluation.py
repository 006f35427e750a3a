"""The eval section: what ``medseg evaluate`` scores and how (metric conventions in docs/metrics.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medseg.config.sections import Section


class SurfaceConfig(Section):
    """Surface distances (HD, HD95, ASSD, NSD); conventions in docs/metrics.md."""

    enabled: bool = True
    tolerance_mm: float = Field(1.0, ge=0, description="NSD tolerance τ in mm")
    class_tolerance_mm: dict[str, float] = Field(default_factory=dict, description="τ per class name, overriding tolerance_mm")
    percentile: float = Field(95.0, ge=0, le=100, description="robust Hausdorff percentile")
    hd95_mode: Literal["medpy", "monai", "deepmind"] = "medpy"
    assd_mode: Literal["medpy", "monai", "deepmind"] = "medpy"
    nsd_mode: Literal["monai", "deepmind"] = "deepmind"
    empty_both: Literal["nan", "best"] = Field("nan", description="both masks empty: undefined (left out of means) or best score")
    empty_one: Literal["worst", "inf", "nan"] = Field("worst", description="one mask empty: distance = image diagonal, inf or undefined")


class TimeSavedConfig(Section):
    """Reader time saved per slice (reference study 000); the model is in docs/metrics.md."""

    enabled: bool = True
    dice_threshold: float = Field(0.8, ge=0, le=1, description="slice Dice at or above which the mask is accepted")
    draw_seconds: float = Field(30.0, ge=0, description="time to draw one class on one slice")
    check_seconds: float = Field(10.0, ge=0, description="time lost checking a rejected mask")
    class_draw_seconds: dict[str, float] = Field(default_factory=dict, description="draw_seconds per class name")
    slice_axis: int = Field(0, ge=0, le=2, description="spatial axis cut into slices (3D)")


class LesionConfig(Section):
    """Lesion-wise detection counts (connected components)."""

    enabled: bool = True
    rule: Literal["overlap", "iou"] = "overlap"
    iou_threshold: float = Field(0.1, ge=0, le=1)
    connectivity: Literal["face", "full"] = "full"


class ReferenceResult(Section):
    """Published numbers to compare against (a paper's table); shown as an extra row by ``medseg compare``."""

    name: str = Field(description="the source, e.g. 'Oktay et al. 2018, Table 2'")
    dice: float | None = Field(None, description="mean Dice over the foreground classes")
    class_dice: dict[str, float] = Field(default_factory=dict, description="Dice per class name")
    precision: float | None = None
    recall: float | None = None
    hd95: float | None = Field(None, description="mm")
    assd: float | None = Field(None, description="mm (surface-to-surface distance)")
    parameters: int | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict, description="other published columns by name: test_loss, pixel_accuracy, macro_f1, weighted_f1, time_saved_s_<class>…"
    )
    note: str = ""


class EvalConfig(Section):
    """What ``medseg evaluate`` scores, and how (metric conventions in docs/metrics.md)."""

    split: Literal["train", "val", "test"] = "test"
    checkpoint: Literal["best", "last"] = "best"
    surface: SurfaceConfig = Field(default_factory=SurfaceConfig)
    time_saved: TimeSavedConfig = Field(default_factory=TimeSavedConfig)
    lesions: LesionConfig = Field(default_factory=LesionConfig)
    loss: bool = Field(True, description="runs: also compute the run's loss on each case, the test loss (one more forward pass per case)")
    reference: list[ReferenceResult] = Field(default_factory=list, description="published numbers shown beside the runs by `medseg compare`")

    @field_validator("reference", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v
