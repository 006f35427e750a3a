"""The web demo (``medseg demo RUNS_DIR``): browse runs' predictions and try a model on an upload; the workspace
(``medseg workspace ROOT``): also create data sets, start and watch trainings, evaluate and compare.

Needs the ``demo`` extra (``pip install 'medseg[demo]'``: gradio); see ``docs/demo.md``.
"""

from __future__ import annotations

from medseg.demo.app import build_app
from medseg.demo.runs import DemoError, RunsFolder, safe_path
from medseg.demo.server import create_server, is_loopback, parse_auth, serve

__all__ = ["DemoError", "RunsFolder", "build_app", "create_server", "is_loopback", "parse_auth", "safe_path", "serve"]
