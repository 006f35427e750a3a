"""medseg: medical image segmentation — import, train, compare, report, demo."""

from __future__ import annotations

__version__ = "0.1.0"

from medseg.core.errors import MedsegError

__all__ = ["MedsegError", "__version__"]
