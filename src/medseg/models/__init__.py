"""Model zoo: ``create_model(name, spatial_dims, in_channels, num_classes, **kwargs)``.

Each family lives in its own module and registers its variants with ``@register_model``; the
families are imported on the first lookup in ``MODELS`` (``create_model``, ``list_models``, …),
so importing this package does not import MONAI, smp or transformers. See docs/models.md for the list, the keyword arguments,
deep supervision and pretrained weights.
"""

from medseg.models.catalog import MODELS, list_models, register_model
from medseg.models.classical import PixelClassifier
from medseg.models.complexity import macs, reference_parameters
from medseg.models.pretrained import LoadReport, load_pretrained, read_state_dict, save_weights
from medseg.models.registry import count_parameters, create_model

__all__ = [
    "MODELS",
    "LoadReport",
    "PixelClassifier",
    "count_parameters",
    "create_model",
    "list_models",
    "load_pretrained",
    "macs",
    "read_state_dict",
    "reference_parameters",
    "register_model",
    "save_weights",
]
