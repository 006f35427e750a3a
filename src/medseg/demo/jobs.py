"""Jobs of the workspace: imports, trainings, evaluations and reports run as separate ``medseg`` processes.

At most ``max_jobs`` run at once; the others wait in a queue (first come, first served). Every job is a
record ``ROOT/jobs/<id>.json`` (written atomically) and a log ``ROOT/jobs/<id>.log``, so the list survives
a page reload and a server restart. A job's command is a list of arguments assembled by the workspace
from validated values (never a string the page sent) and run without a shell, in the workspace folder.

Jobs die with the server (Linux: the parent-death signal; elsewhere: when the server exits normally):
a restarted server marks the jobs it finds without a live process ``interrupted``, and an interrupted
or stopped training is resumed with ``medseg train --resume RUN`` (the run's last checkpoint), a ``medseg auto``
run with its own command and ``--resume``.
The process runner is written here because the work is short-lived local processes with a persisted
queue; a task queue (Celery, RQ) would need a broker for that.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.core.atomic import write_json
from medseg.demo.runs import DemoError
from medseg.demo.workspace import Workspace

ACTIVE = ("queued", "running")
RESUMABLE = ("stopped", "interrupted", "failed")
STOP_GRACE_S = 20.0

_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc symbols
        _LIBC = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class Job:
    """One job's record (``jobs/<id>.json``)."""

    id: str
    kind: str
    title: str
    argv: list[str]
    run: str | None = None
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    pid: int | None = None
    stop_requested: float | None = None
    attempts: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def _alive(pid: int | None, argv: list[str]) -> bool:
    """Whether ``pid`` is a live process running exactly ``argv`` (not a recycled pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.is_file():
        try:
            if cmdline.read_bytes().split(b"\0")[:-1] != [a.encode() for a in argv]:
                return False
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    return True


class JobManager:
    """The workspace's job queue and the processes it runs.

    Args:
        ws: the workspace.
        max_jobs: jobs running at once.
        poll_s: how often the queue is looked at (by a background thread when ``start``).
        start: run the background thread (tests call :meth:`tick` themselves).
    """

    def __init__(self, ws: Workspace, max_jobs: int = 1, poll_s: float = 0.5, start: bool = True):
        if max_jobs < 1:
            raise DemoError("at least one job must be allowed to run", where="--max-jobs", fix="e.g. --max-jobs 1")
        self.ws, self.max_jobs, self.poll_s = ws, max_jobs, poll_s
        self.dir = ws.root / "jobs"
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._jobs: dict[str, Job] = {}
        self._stop = threading.Event()
        self._load()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="medseg-jobs", daemon=True)
            self._thread.start()
            atexit.register(self.shutdown)

    # ------------------------------------------------------------------ records

    def _load(self) -> None:
        """Read the records; a job recorded as running whose process is gone is ``interrupted``."""
        for p in sorted(self.dir.glob("*.json")):
            try:
                job = Job(**json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            if job.state == "running" and not _alive(job.pid, job.argv):
                job.state, job.ended, job.pid = "interrupted", time.time(), None
                self._save(job)
            self._jobs[job.id] = job

    def _save(self, job: Job) -> None:
        write_json(self.dir / f"{job.id}.json", asdict(job))

    def log_path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.log"

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def get(self, job_id: str | None) -> Job:
        with self._lock:
            if not job_id or job_id not in self._jobs:
                raise DemoError(f"no job {job_id!r}", where="jobs", fix="pick a job from the list")
            return self._jobs[job_id]

    def for_run(self, run: str) -> Job | None:
        """The newest job of a run folder (relative to the root)."""
        return next((j for j in self.jobs() if j.run == run), None)

    # ------------------------------------------------------------------ actions

    def submit(self, kind: str, title: str, argv: list[str], run: str | None = None) -> Job:
        """Queue a job (it starts when fewer than ``max_jobs`` run)."""
        if argv[:3] != [sys.executable, "-m", "medseg.cli"]:
            raise DemoError("a job runs a medseg command only", where="jobs", fix="use the page's forms")
        with self._lock:
            if run is not None and any(j.run == run and j.active for j in self._jobs.values()):
                raise DemoError("a job of this run is queued or running already", where=run, fix="wait for it, or stop it first")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            job_id = f"{stamp}-{kind}-{len(self._jobs) + 1:04d}"
            job = Job(id=job_id, kind=kind, title=title, argv=list(argv), run=run)
            self._jobs[job_id] = job
            self._save(job)
        return job

    def stop(self, job_id: str) -> Job:
        """Cancel a queued job, or interrupt a running one (SIGINT to its process group, SIGKILL after a grace time)."""
        with self._lock:
            job = self.get(job_id)
            if job.state == "queued":
                job.state, job.ended = "stopped", time.time()
            elif job.state == "running" and job.stop_requested is None:
                job.stop_requested = time.time()
                self._signal(job, signal.SIGINT)
            self._save(job)
            return job

    def resume(self, job_id: str) -> Job:
        """Queue a stopped, interrupted or failed training again, as ``medseg train --resume RUN`` (``medseg auto … --resume``)."""
        from medseg.demo.newrun import resume_argv

        with self._lock:
            job = self.get(job_id)
            if job.kind not in ("train", "auto") or job.run is None:
                raise DemoError("only trainings are resumed", where=job_id, fix="start the job again from its page")
            if job.state not in RESUMABLE:
                raise DemoError(f"the job is {job.state}", where=job_id, fix="resume a stopped or interrupted training")
            run = self.ws.inside(job.run)
            if job.kind == "auto":  # the same validated command, continued from RUN/auto.json
                if not (run / "auto.json").is_file():
                    raise DemoError("nothing to resume: medseg auto has not planned yet", where=job.run, fix="start a new run")
                job.argv = [a for a in job.argv if a != "--resume"] + ["--resume"]
            elif not (run / "checkpoints" / "last.ckpt").is_file():
                raise DemoError("nothing to resume: the run has no last checkpoint yet", where=job.run, fix="start a new run")
            else:
                job.argv = resume_argv(self.ws, run)
            job.state, job.returncode, job.stop_requested, job.ended, job.pid = "queued", None, None, None, None
            job.created = time.time()
            self._save(job)
            return job

    def _signal(self, job: Job, sig: int) -> None:
        if job.pid:
            try:
                os.killpg(job.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    # ------------------------------------------------------------------ the queue

    def tick(self) -> None:
        """Collect finished processes, enforce stop grace times, start queued jobs."""
        with self._lock:
            now = time.time()
            for job in [j for j in self._jobs.values() if j.state == "running"]:
                proc = self._procs.get(job.id)
                code = proc.poll() if proc is not None else (None if _alive(job.pid, job.argv) else -1)
                if code is None:
                    if job.stop_requested and now - job.stop_requested > STOP_GRACE_S:
                        self._signal(job, signal.SIGKILL)
                    continue
                self._procs.pop(job.id, None)
                job.returncode, job.ended, job.pid = code, now, None
                if job.stop_requested:
                    job.state = "stopped"
                elif proc is None:  # a process from before a restart: judged by its run folder
                    job.state = "finished" if self._run_finished(job) else "interrupted"
                else:
                    job.state = "finished" if code == 0 else "failed"
                self._save(job)
            running = sum(j.state == "running" for j in self._jobs.values())
            for job in sorted((j for j in self._jobs.values() if j.state == "queued"), key=lambda j: j.created):
                if running >= self.max_jobs:
                    break
                self._start(job)
                running += 1

    def _run_finished(self, job: Job) -> bool:
        from medseg.runs import run_status

        return job.run is not None and run_status(self.ws.root / job.run) == "finished"

    def _start(self, job: Job) -> None:
        log = open(self.log_path(job.id), "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            log.write(f"$ medseg {' '.join(job.argv[3:])}\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "MEDSEG_JOB": job.id}
            proc = subprocess.Popen(
                job.argv,
                cwd=self.ws.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if _LIBC is not None else None,  # one libc call, no Python state
            )
        except OSError as e:
            job.state, job.ended = "failed", time.time()
            log.write(f"could not start: {e}\n".encode())
            self._save(job)
            return
        finally:
            log.close()
        self._procs[job.id] = proc
        job.state, job.pid, job.started, job.attempts = "running", proc.pid, time.time(), job.attempts + 1
        self._save(job)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the queue keeps going whatever one record does
                import logging

                logging.getLogger("medseg.demo").exception("job queue")
            self._stop.wait(self.poll_s)

    def shutdown(self, wait_s: float = 10.0) -> None:
        """Stop the queue; running jobs are interrupted (resume them after the next start)."""
        self._stop.set()
        with self._lock:
            running = [j for j in self._jobs.values() if j.state == "running" and j.id in self._procs]
            for job in running:
                self._signal(job, signal.SIGINT)
        deadline = time.time() + wait_s
        for job in running:
            proc = self._procs.get(job.id)
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self._signal(job, signal.SIGKILL)
            with self._lock:
                job.state, job.ended, job.pid = "interrupted", time.time(), None
                self._save(job)

    # ------------------------------------------------------------------ what the page shows

    def log_tail(self, job_id: str, chars: int = 4000) -> str:
        path = self.log_path(job_id)
        if not path.is_file():
            return ""
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - chars))
            return f.read().decode("utf-8", errors="replace")

    def live_folder(self, job: Job) -> Path | None:
        """The run folder showing a job's training: its run, or the candidate ``medseg auto`` trains now."""
        if job.run is None:
            return None
        run = self.ws.root / job.run
        if job.kind == "auto" and not (run / "history.csv").is_file():
            found = [p for p in (run / "candidates").glob("*") if (p / "run.json").is_file()] if (run / "candidates").is_dir() else []
            if found:
                return max(found, key=lambda p: (p / "run.json").stat().st_mtime)
        return run

    def progress(self, job: Job) -> tuple[int, int | None]:
        """(epochs done, epochs planned) of a training job, from its run folder."""
        run = self.live_folder(job)
        if run is None:
            return 0, None
        done = 0
        hist = run / "history.csv"
        if hist.is_file():
            try:
                done = max(0, len(hist.read_text(encoding="utf-8").strip().splitlines()) - 1)
            except OSError:
                done = 0
        total: int | None = None
        try:
            info = json.loads((run / "run.json").read_text(encoding="utf-8"))
            total = (info.get("length") or {}).get("epochs")
        except (OSError, ValueError):
            total = None
        return done, total
