"""``python -m medseg.cli``."""

from medseg.cli import main

main()
