"""The web demo (``medseg demo RUNS_DIR``): browse runs' test predictions and try a model on an upload.

Needs the ``demo`` extra (``pip install 'medseg[demo]'``: gradio); see ``docs/demo.md``.
"""

from __future__ import annotations

from medseg.demo.app import build_app, create_server, is_loopback, parse_auth, serve
from medseg.demo.runs import DemoError, RunsFolder, safe_path

__all__ = ["DemoError", "RunsFolder", "build_app", "create_server", "is_loopback", "parse_auth", "safe_path", "serve"]
