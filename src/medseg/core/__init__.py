"""Floor 1: errors, atomic writes, the registry, progress bars and the ``Case``; imports nothing else of medseg."""
