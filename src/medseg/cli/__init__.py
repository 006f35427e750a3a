"""The ``medseg`` command line: a thin layer over the Python API (typer + rich).

Commands live in ``data`` (import, inspect, prepare…), ``training`` (train, sweep, quickstart), ``results``
(evaluate, predict, compare, report, demo…) and ``info`` (models, config); ``app`` holds the typer
application. ``medseg --help`` lists them in pipeline order (:data:`ORDER`).
"""

from __future__ import annotations

from medseg.cli import data, info, results, training  # noqa: F401  (each module registers its commands)
from medseg.cli.app import app

#: ``medseg --help`` lists the commands in the order a person uses them.
ORDER = [
    "auto",
    "quickstart",
    "datasets",
    "import",
    "inspect",
    "prepare",
    "augment-preview",
    "train",
    "evaluate",
    "predict",
    "postprocess",
    "export",
    "compare",
    "sweep",
    "report",
    "demo",
    "models",
    "config",
]
app.registered_commands.sort(key=lambda c: ORDER.index(c.name) if c.name in ORDER else len(ORDER))


def main() -> None:
    """The ``medseg`` entry point: SIGTERM stops a command like Ctrl+C does, with its temporaries removed."""
    import sys

    from medseg.core.signals import Terminated, sigterm_raises

    try:
        with sigterm_raises():
            app()
    except Terminated:
        print("medseg: stopped (SIGTERM); unfinished outputs were removed", file=sys.stderr)
        raise


__all__ = ["app", "main"]
