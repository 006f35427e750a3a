"""The house rules of docs/architecture.md, checked on the source: floors import only downwards, no import
cycle, no private name imported across modules, no module over 400 lines, keyword-only parameters
beyond five, and tests that mirror the package folders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

SRC = REPO / "src" / "medseg"

#: the floor of each top-level room; a module imports rooms on lower floors, or its own room
FLOORS = {
    "core": 1,
    "metrics": 2,
    "config": 2,
    "viz": 2,
    "recipes": 3,
    "io": 3,
    "models": 3,
    "losses": 3,
    "data": 4,
    "runs": 5,
    "engine": 6,
    "workflows": 7,
    "reports": 8,
    "demo": 8,
    "cli": 9,
}
MAX_LINES = 400
#: functions that must take positional arguments: gradio calls event handlers with its inputs in order
POSITIONAL_OK = {("demo", "render")}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every medseg import, also those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "medseg":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.append((full if full in known else node.module, "" if full in known else alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "medseg"]
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t, _, _ in imports(p, known) if t in known and t != m} for m, p in known.items()}


def test_every_room_has_a_floor() -> None:
    rooms = {room(m) for m in modules()} - {""}
    assert rooms <= set(FLOORS), f"rooms without a floor: {sorted(rooms - set(FLOORS))} (add them to FLOORS and docs/architecture.md)"


def test_floors_import_only_downwards() -> None:
    known = modules()
    upward = []
    for m, p in known.items():
        mine = room(m)
        if not mine:  # the package's __init__: version and the error base class
            continue
        for target, _, line in imports(p, known):
            theirs = room(target)
            if theirs and theirs != mine and FLOORS[theirs] >= FLOORS[mine]:
                upward.append(f"{p.relative_to(REPO)}:{line} imports {target} (floor {FLOORS[theirs]} ≥ {FLOORS[mine]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_private_names_across_modules() -> None:
    known = modules()
    found = [
        f"{p.relative_to(REPO)}:{line} imports {name} from {target}"
        for m, p in known.items()
        for target, name, line in imports(p, known)
        if (name.startswith("_") and not name.startswith("__")) or any(part.startswith("_") and part != "__init__" for part in target.split("."))
    ]
    assert not found, "\n".join(found)


def test_no_module_over_the_size_limit() -> None:
    big = {str(p.relative_to(REPO)): n for p in SRC.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by what they do): {big}"


def test_keyword_only_beyond_five_parameters() -> None:
    found = []
    for p in SRC.rglob("*.py"):
        if p.parent.name == "cli":  # typer commands: every parameter is a command-line option
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                pos = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(pos) > 5 and (p.parent.name, node.name) not in POSITIONAL_OK:
                    found.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}({', '.join(pos)})")
    assert not found, "make the parameters after the required ones keyword-only (*):\n" + "\n".join(found)


def test_tests_mirror_the_package() -> None:
    tests = REPO / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name not in ("assets", "__pycache__")}
    rooms = {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= rooms, f"test folders that are not package folders: {sorted(folders - rooms)}"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test modules with one name (pytest imports them by base name)"


@pytest.mark.parametrize(
    ("planted", "rule"),
    [
        ("from medseg.cli import app\n", test_floors_import_only_downwards),
        ("from medseg.workflows.scoring import _csv\n", test_no_private_names_across_modules),
        ("\n" * (MAX_LINES + 1), test_no_module_over_the_size_limit),
        ("def f(a, b, c, d, e, g):\n    pass\n", test_keyword_only_beyond_five_parameters),
    ],
)
def test_each_rule_catches_a_planted_violation(planted: str, rule: object) -> None:
    victim = SRC / "core" / "_planted_for_test.py"
    victim.write_text(planted, encoding="utf-8")
    try:
        with pytest.raises(AssertionError):
            rule()  # type: ignore[operator]
    finally:
        victim.unlink()
