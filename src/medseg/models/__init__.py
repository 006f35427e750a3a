"""Model zoo: ``create_model(name, spatial_dims, in_channels, num_classes, **kwargs)``.

Each family lives in its own module and registers its variants with ``@register_model``;
importing this package imports them all.
"""

from medseg.models import unet as _unet  # noqa: F401  (registers)
from medseg.models.registry import MODELS, count_parameters, create_model, list_models, register_model

__all__ = ["MODELS", "count_parameters", "create_model", "list_models", "register_model"]
