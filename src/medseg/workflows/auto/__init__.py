"""``medseg auto``: a good model on a new data set with no config (see :mod:`medseg.workflows.auto.run`)."""

from medseg.workflows.auto.config import auto_config
from medseg.workflows.auto.run import AUTO_FILE, run_auto

__all__ = ["AUTO_FILE", "auto_config", "run_auto"]
