"""The demo's web server: the page at ``/``, the runs folder's files at ``/runs/<path>``, a login when asked.

``medseg demo RUNS_DIR`` serves the viewer over a folder of runs; ``medseg workspace ROOT`` serves the same
page plus the workspace pages (data sets, new runs, jobs) over a workspace folder
(:class:`~medseg.demo.workspace.Workspace`), with a :class:`~medseg.demo.jobs.JobManager` running the jobs.
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.core.atomic import clean_stale
from medseg.demo.app import CSS, build_app
from medseg.demo.runs import DemoError, safe_path


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:pass`` → ``(user, pass)``; ``None`` stays ``None``."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise DemoError("expected USER:PASSWORD", where="--auth", fix="e.g. --auth alice:s3cret")
    return user, password


def create_server(
    runs_dir: str | Path | None,
    auth: tuple[str, str] | None = None,
    max_upload_mb: float = 512,
    max_concurrent: int = 2,
    *,
    workspace: str | Path | None = None,
    max_jobs: int = 1,
) -> Any:
    """The ASGI application: the demo page at ``/`` and the runs folder's files at ``/runs/<path>``.

    Args:
        runs_dir: the folder holding run folders.
        auth: ``(user, password)`` to require a login, or ``None``.
        max_upload_mb: upload size limit in MB (gradio refuses larger uploads, the reader checks again).
        max_concurrent: predictions running at once.
        workspace: a workspace folder (then ``runs_dir`` is ignored: the runs are ``workspace/runs``).
        max_jobs: jobs of the workspace running at once (the rest wait in a queue).

    Returns:
        A FastAPI application (serve it with uvicorn).
    """
    import fastapi
    import gradio as gr
    from fastapi.responses import FileResponse, PlainTextResponse
    from starlette.routing import Mount

    jobs = None
    if workspace is not None:
        from medseg.demo.jobs import JobManager
        from medseg.demo.workspace import Workspace

        ws = Workspace(workspace, max_upload_mb)
        jobs = JobManager(ws, max_jobs=max_jobs)
        runs_dir = ws.runs_dir
    if runs_dir is None:
        raise DemoError("no runs folder given", where="medseg demo", fix="give RUNS_DIR, or a workspace")
    clean_stale(tempfile.gettempdir())  # output folders of demo servers that were killed
    blocks = build_app(runs_dir, max_upload_mb, max_concurrent, jobs=jobs)
    root = blocks.medseg.runs.root
    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    holder: dict[str, Any] = {}

    def run_file(path: str, request: Any) -> Any:
        gapp = holder.get("gradio")
        if auth is not None and gapp is not None:
            token = request.cookies.get(f"access-token-{gapp.cookie_id}") or request.cookies.get(f"access-token-unsecure-{gapp.cookie_id}")
            if token not in gapp.tokens:
                return PlainTextResponse("log in first", status_code=401)
        try:
            target = safe_path(root, path)
        except DemoError as e:
            return PlainTextResponse(e.one_line(), status_code=404 if "no such file" in e.problem else 403)
        return FileResponse(target, headers={"X-Content-Type-Options": "nosniff"})

    # real annotation objects: this module's postponed (string) annotations cannot name the lazily imported fastapi
    run_file.__annotations__ = {"path": str, "request": fastapi.Request}
    app.add_api_route("/runs/{path:path}", run_file, methods=["GET"])

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=auth,
        max_file_size=int(max_upload_mb * 2**20),
        ssr_mode=False,
        show_error=False,
        footer_links=[],
        theme=theme,
        css=CSS,
    )
    holder["gradio"] = next(r.app for r in app.routes if isinstance(r, Mount))
    app.state.medseg = blocks.medseg
    app.state.jobs = jobs
    return app


def serve(
    runs_dir: str | Path | None,
    *,
    workspace: str | Path | None = None,
    max_jobs: int = 1,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    max_upload_mb: float = 512,
    max_concurrent: int = 2,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Start the demo and block until interrupted.

    Args:
        runs_dir: the folder holding run folders.
        host: address to bind; 127.0.0.1 (this machine only) unless you mean to share it.
        port: TCP port.
        auth: ``(user, password)`` to require a login.
        max_upload_mb: upload size limit in MB.
        max_concurrent: predictions running at once.
        workspace: serve a workspace folder (data sets, new runs, jobs) instead of ``runs_dir``.
        max_jobs: jobs of the workspace running at once.
        ready: called with the URL once the server accepts connections.
    """
    import uvicorn

    app = create_server(runs_dir, auth, max_upload_mb, max_concurrent, workspace=workspace, max_jobs=max_jobs)
    # import the inference stack (torch, Lightning, MONAI) while the server starts, not on the first click
    threading.Thread(target=lambda: __import__("medseg.engine.inferer"), daemon=True).start()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if ready is not None:

        def wait() -> None:
            import time

            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                ready(url)

        threading.Thread(target=wait, daemon=True).start()
    try:
        server.run()
    finally:  # the masks and pictures written for this server's answers
        shutil.rmtree(app.state.medseg.out_dir, ignore_errors=True)
