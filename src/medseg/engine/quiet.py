"""Keep Lightning's own chatter out of what a person reads while medseg trains.

Lightning logs "GPU available…", "💡 Tip: … litlogger" (an advertisement), "`weights_only` was not
set…", "`Trainer.fit` stopped…" at INFO level on every run, and warns from its own modules (a
``LeafSpec`` deprecation of torch's pytree, "checkpoint directory is not empty" on every resume).
medseg reports what matters itself (progress bar, ``history.csv``, one-line errors), so within
:func:`quiet_lightning` Lightning's loggers show warnings and errors only and the warnings raised by
Lightning's modules are dropped. ``MEDSEG_VERBOSE=1`` shows everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

#: the loggers Lightning writes to
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO messages and its modules' warnings are not shown within the block."""
    if os.environ.get("MEDSEG_VERBOSE", "") not in ("", "0"):
        yield
        return
    loggers = [logging.getLogger(n) for n in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(lightning|pytorch_lightning|lightning_fabric)(\.|$)")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*deprecated", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
