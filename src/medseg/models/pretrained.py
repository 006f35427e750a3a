"""Pretrained weights from a local path only: read safely, match by name, adapt, report.

* **Reading** — ``.safetensors`` (also sharded, with ``model.safetensors.index.json``) or a torch
  file (``.pt/.pth/.bin/.ckpt``) read with ``torch.load(weights_only=True)``: tensors and plain
  containers only, never arbitrary pickled objects. A Hugging Face folder (``config.json`` +
  weights) works too. Lightning checkpoints (``state_dict``) and ``{"model": …}`` wrappers are
  unwrapped.
* **Matching** — keys are aligned by the prefix translation that matches most names (so a
  torchvision/timm ResNet ``conv1.weight`` finds an smp encoder's ``net.encoder.conv1.weight``,
  an HF ``segformer.encoder…`` finds ``net.net.model.segformer.encoder…``, and this package's own
  checkpoints match as they are). Modules may declare ``pretrained_renames`` (e.g. FCN maps
  torchvision ``classifier.0.`` to ``fc6.``).
* **Adapting** — a convolution whose input channels differ (the first one) is adapted by summing
  the RGB weights (1 channel) or cycling and rescaling them (other counts); a fully connected
  weight of the same size is reshaped into a convolution (FCN's fc6/fc7). Tensors whose shapes
  differ otherwise — the old classification head — are ignored: the model keeps its newly
  initialised head for its own class count.
* **Reporting** — :class:`LoadReport` lists loaded, adapted, missing and ignored keys.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from medseg.core.errors import ModelError

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "params", "weights")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        source: the file or folder read.
        mapping: the key translation used, e.g. ``"'' → 'net.encoder.'"``.
        loaded: model keys copied unchanged.
        adapted: model keys filled from a tensor of another shape (first convolution channels,
            fully connected → convolution), with how.
        missing: model keys the file did not provide (left as initialised — e.g. the new head).
        ignored: file keys not used, with why (no such key, shape mismatch).
    """

    source: str
    mapping: str = ""
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")

        parts = [f"loaded {len(self.loaded)}", f"adapted {len(self.adapted)}" + (f" ({few(list(self.adapted))})" if self.adapted else "")]
        parts.append(f"missing {len(self.missing)}" + (f" ({few(self.missing)})" if self.missing else ""))
        parts.append(f"ignored {len(self.ignored)}" + (f" ({few(list(self.ignored))})" if self.ignored else ""))
        return f"{self.source}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- reading
def _hint(model_name: str | None) -> str:
    if not model_name:
        return ""
    from medseg.models.catalog import MODELS

    if model_name not in MODELS:
        return ""
    w = MODELS.meta(model_name).get("weights", "")
    return f" — expected {w}" if w else f" — note: no published weights are known for {model_name!r}; use a checkpoint of this model"


def _load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg or "GLOBAL " in msg:
            bad = next((ln.strip() for ln in msg.splitlines() if "Unsupported global" in ln or "GLOBAL " in ln), "")
            raise ModelError(
                f"refusing to load: the file holds pickled Python objects that would run code on load ({bad[:120]})",
                where=path,
                fix="re-save only the tensors (torch.save(model.state_dict(), path) or safetensors) from a trusted source",
            ) from None
        detail = next((ln.strip() for ln in msg.splitlines() if "Unsupported" in ln), msg.splitlines()[0] if msg else "unpickling error")
        raise ModelError(f"corrupt or unreadable weights file ({detail[:120]})", where=path, fix="download or export the file again") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ModelError(f"corrupt or unreadable weights file ({first})", where=path, fix="download or export the file again") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ModelError(f"corrupt or unreadable safetensors file ({first})", where=path, fix="download or export the file again") from None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint (Lightning ``state_dict``, ``{"model": …}``, plain)."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return tensors
        nested = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    raise ModelError(
        "no state dict (name → tensor mapping) found in the file", where=path, fix="save weights with torch.save(model.state_dict(), path) or as safetensors"
    )


def read_state_dict(path: str | Path, model_name: str | None = None) -> dict[str, torch.Tensor]:
    """Read name → tensor from a local file or Hugging Face folder, safely.

    Raises:
        ModelError: the path is absent (saying what to put there), unreadable, or a pickle that
            needs code execution.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(
            f"pretrained weights not found{_hint(model_name)}",
            where=p,
            fix=f"put the weights at {p} (nothing is downloaded at run time: fetch them on a machine with internet, copy them here) or drop pretrained",
        )
    hf = _load_hugging_face(p)
    if hf is not None:
        return hf
    if p.is_dir():
        index = p / "model.safetensors.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as e:
                raise ModelError(f"unreadable safetensors index ({e})", where=index) from None
            out: dict[str, torch.Tensor] = {}
            for s in shards:
                out.update(_load_safetensors(p / s))
            return out
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                return read_state_dict(p / name)
        files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", *_TORCH_SUFFIXES))
        if len(files) == 1:
            return read_state_dict(files[0])
        raise ModelError(
            f"no single weights file in the folder ({len(files)} candidates)",
            where=p,
            fix="put model.safetensors (or pytorch_model.bin) in it, or point to the file itself",
        )
    if p.suffix == ".safetensors":
        return _load_safetensors(p)
    return _unwrap(_load_torch(p), p)


def _load_hugging_face(path: Path) -> dict[str, torch.Tensor] | None:
    """A Hugging Face folder (``config.json`` naming a transformers class): read it with
    transformers itself, offline, so its checkpoint key conversions apply (transformers 5 renames
    SegFormer's modules in memory but keeps the published names in files). ``None`` otherwise."""
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, OSError):
        return None
    arch = (cfg.get("architectures") or [None])[0]
    if not arch:
        return None
    import transformers

    cls = getattr(transformers, arch, None)
    if cls is None:
        return None
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ModelError(
            f"corrupt or unreadable Hugging Face folder ({first})", where=folder, fix="copy the folder (config.json + model.safetensors) again"
        ) from None
    return {k: v.detach() for k, v in model.state_dict().items()}


def _check_hf_config(model: nn.Module, path: Path) -> None:
    """A Hugging Face folder whose ``config.json`` names another ``model_type`` is refused."""
    cfg = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not cfg.is_file():
        return
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (ValueError, OSError):
        return
    ours = {getattr(getattr(m, "config", None), "model_type", None) for m in model.modules()} - {None}
    if model_type and ours and model_type not in ours:
        raise ModelError(
            f"these are weights of another architecture ({model_type!r}, the model is {'/'.join(sorted(ours))})",
            where=path,
            fix="use weights of the same architecture",
        )


# ----------------------------------------------------------------------------- matching
def _prefixes(keys: list[str], depth: int) -> set[str]:
    out = {""}
    for k in keys:
        parts = k.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            out.add(".".join(parts[:d]) + ".")
    return out


def _align(src: list[str], tgt: set[str]) -> tuple[str, str, int]:
    """The (strip, add) prefix pair mapping the most source keys onto target keys."""
    prefixes_of: dict[str, list[str]] = {}  # target suffix → the prefixes that complete it
    for t in tgt:
        parts = t.split(".")
        for d in range(len(parts)):
            prefixes_of.setdefault(".".join(parts[d:]), []).append(".".join(parts[:d]) + "." if d else "")
    best = ("", "", -1)
    for strip in sorted(_prefixes(src, 2), key=len):
        counts: Counter[str] = Counter()
        for k in src:
            if k.startswith(strip):
                counts.update(prefixes_of.get(k[len(strip) :], ()))
        for add, n in sorted(counts.items(), key=lambda kv: (-kv[1], len(kv[0]))):
            if n > best[2]:
                best = (strip, add, n)
            break
    return best


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution weight ``(O, C_src, *k)`` to ``in_channels`` inputs.

    One channel: sum over the source channels (a grayscale image then gives the response the
    network had to a gray RGB image). Other counts: cycle the source channels and rescale by
    ``C_src / in_channels`` (the rule timm uses).
    """
    c_src = weight.shape[1]
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_channels // c_src)
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels] * (c_src / in_channels)


def load_pretrained(model: nn.Module, path: str | Path, model_name: str | None = None, min_coverage: float = 0.5) -> LoadReport:
    """Load local weights into ``model`` (in place) and say what happened.

    Args:
        model: the freshly built model (already with its own ``in_channels`` / ``num_classes``).
        path: a weights file (``.safetensors``, ``.pt/.pth/.bin/.ckpt``) or a Hugging Face folder.
        model_name: registered name, used to say which weights to put where when ``path`` is absent.
        min_coverage: below this fraction of the file's tensors, or of the model part they map
            into, the weights are taken to be of another architecture and refused.

    Returns:
        A :class:`LoadReport`.

    Raises:
        ModelError: absent path, corrupt file, pickle needing code execution, weights of another
            architecture.
    """
    p = Path(path).expanduser()
    src = read_state_dict(p, model_name)
    if p.exists():
        _check_hf_config(model, p)
    renames: dict[str, str] = {}
    for m in model.modules():
        renames.update(getattr(m, "pretrained_renames", {}) or {})
    renamed: dict[str, torch.Tensor] = {}
    for k, v in src.items():
        for old, new in renames.items():
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        renamed[k] = v
    target = model.state_dict()
    strip, add, _ = _align(list(renamed), set(target))
    report = LoadReport(source=str(p), mapping=f"{strip!r} → {add!r}")
    new: dict[str, torch.Tensor] = {}
    for k, v in renamed.items():
        t_key = add + k[len(strip) :] if k.startswith(strip) else None
        if t_key is None or t_key not in target:
            report.ignored[k] = "no such key in the model"
            continue
        t = target[t_key]
        if v.shape == t.shape:
            new[t_key] = v.to(t.dtype)
            report.loaded.append(t_key)
        elif v.ndim == t.ndim >= 3 and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
            new[t_key] = adapt_input_channels(v, t.shape[1]).to(t.dtype)
            report.adapted[t_key] = f"input channels {v.shape[1]} → {t.shape[1]} (summed/cycled)"
        elif v.ndim == 2 and t.ndim >= 3 and v.numel() == t.numel():
            new[t_key] = v.reshape(t.shape).to(t.dtype)
            report.adapted[t_key] = f"fully connected {tuple(v.shape)} → convolution {tuple(t.shape)}"
        else:
            report.ignored[k] = f"shape {tuple(v.shape)} ≠ model {tuple(t.shape)}"
    used = len(new)
    subtree = [k for k in target if k.startswith(add)]
    src_cov = used / max(1, len(renamed))
    tgt_cov = used / max(1, len(subtree))
    if used == 0 or src_cov < min_coverage or tgt_cov < min_coverage:
        example = next(iter(renamed), "?")
        raise ModelError(
            f"these look like weights of another architecture: {used} of {len(renamed)} tensors fit {model_name or type(model).__name__} "
            f"({len(subtree)} tensors under {add or 'the model root'!r}; file keys like {example!r})",
            where=p,
            fix="use weights of the same architecture and size (see docs/models.md, 'Pretrained weights')",
        )
    model.load_state_dict(new, strict=False)
    report.missing = [k for k in target if k not in new]
    return report


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict as safetensors (the format :func:`load_pretrained` prefers)."""
    from safetensors.torch import save_file

    from medseg.core.atomic import atomic_path

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp))
    return Path(path)


#: model parameters that carry pretrained weights (from a sweep's base config to every model of it)
WEIGHT_KEYS = ("pretrained", "pretrained_channels")


def weights_for(model: str, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``params`` with the weights meant for ``model``, and a note when it trains from scratch instead.

    ``pretrained`` is one path, or ``{model name: path}`` when a sweep compares models whose weights
    differ. A model without pretrained weights (``weights`` empty in the catalogue), or one the
    mapping leaves out, loses the weight keys rather than failing on a file meant for another model.
    """
    from medseg.models.catalog import MODELS

    if "pretrained" not in params:
        return dict(params), ""
    value = params["pretrained"]
    if isinstance(value, dict):
        value = value.get(model)
    takes = model in MODELS and bool(MODELS.meta(model).get("weights"))
    if value is not None and takes:
        return {**params, "pretrained": value}, ""
    why = "it has no pretrained weights" if not takes else "no weights were given for it"
    return {k: v for k, v in params.items() if k not in WEIGHT_KEYS}, f"{model} trains from scratch ({why})"
