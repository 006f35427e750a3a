"""Preprocessing that can be undone: reorient, crop, normalise, resample, resize, pad — and the cache.

:func:`preprocess_case` turns a :class:`~medseg.core.case.Case` into the array a network sees and a
*record* (plain JSON) of every step; :func:`invert_label` and :func:`invert_probabilities` walk the
record backwards to put a prediction on the case's original grid (same shape, same affine).

Steps, in order (each optional, see :class:`PreprocessSpec`):

1. reorientation to RAS (nibabel's orientation tools: axis permutation and flips, exact);
2. crop to the non-zero image box or the label's foreground box (plus a margin);
3. intensity normalisation per channel (``ct``, ``zscore``, ``zscore_nonzero``, ``clip01``, ``none``);
4. resampling to a target spacing — images linear (or cubic), labels nearest; when the spacing is
   strongly anisotropic the coarse axis is resampled separately with nearest interpolation, so slices
   are never blended (as nnU-Net does);
5. resizing to a fixed spatial size (images linear, labels nearest);
6. centred zero padding to a minimum size.

Modules: ``spec`` (the recipe), ``transforms`` (the steps and their inverses), ``cache`` (the
memory-mapped ``.npy`` cache, :func:`prepare`).
"""

from medseg.data.preprocessing.cache import Cache, check_cache, default_cache_dir, prepare, read_cache_info
from medseg.data.preprocessing.spec import NORMALIZATIONS, PreprocessSpec, ras_spacings, resolve_spec
from medseg.data.preprocessing.transforms import invert_label, invert_probabilities, normalize_image, preprocess_case, preprocess_pair

__all__ = [
    "NORMALIZATIONS",
    "Cache",
    "PreprocessSpec",
    "check_cache",
    "default_cache_dir",
    "invert_label",
    "invert_probabilities",
    "normalize_image",
    "prepare",
    "preprocess_case",
    "preprocess_pair",
    "ras_spacings",
    "read_cache_info",
    "resolve_spec",
]
