"""The house stays one-directional: imports only run down the floors of shared/DESIGN.md.

Floors (a module may import its own package and anything on a lower floor):
  1 errors, files, config      2 dist, then data | models | optim (side by side)      3 methods
  4 engine      5 report      6 launch      7 cli, __main__
data, models and optim do not import each other; dist imports floor 1 only (data may use it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "trainlab"
# fractions order the areas inside a floor: config may use errors and files; data may use dist
FLOOR = {"__init__": 1.0, "errors": 1.0, "files": 1.1, "config": 1.2,
         "dist": 2.0, "data": 2.1, "models": 2.1, "optim": 2.1,
         "methods": 3, "engine": 4, "report": 5, "launch": 6, "cli": 7, "__main__": 7.1}
# function-local imports of trainlab modules are for start-up time only (torch, matplotlib)
LOCAL_IMPORTS_ALLOWED = {"cli"}


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported trainlab module, line, inside a function) for every import in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    me = _module(path)
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                keep = len(me.split(".")) - node.level + (path.name == "__init__.py")
                base = me.split(".")[:keep]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for n in names:
            if n == "trainlab" or n.startswith("trainlab."):
                out.append((n, node.lineno, id(node) in local))
    return out


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    """module -> the modules it imports (`from pkg import mod` -> pkg.mod; `from pkg import
    name` -> pkg)."""
    files = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for m, p in files.items():
        found = [t for t, _, _ in _imports(p)]
        for target in found:
            if any(o.startswith(target + ".") and o in files for o in found):
                continue  # `from pkg import mod`: the edge goes to pkg.mod
            while target not in files and "." in target:  # `from mod import name`
                target = target.rsplit(".", 1)[0]
            if target in files and target != m:
                graph[m].add(target)
    return graph


def test_every_area_has_a_floor():
    areas = {_area(_module(p)) for p in PKG.rglob("*.py")}
    assert areas <= set(FLOOR), f"give these a floor in FLOOR and DESIGN.md: {areas - set(FLOOR)}"


def test_imports_only_run_down():
    bad = []
    for p in PKG.rglob("*.py"):
        me = _area(_module(p))
        for target, line, _ in _imports(p):
            other = _area(target)
            if other == me or target == "trainlab":
                continue
            if FLOOR[other] >= FLOOR[me]:  # up, or sideways (data | models | optim)
                bad.append(f"{p.relative_to(PKG.parent)}:{line} ({me}, floor {FLOOR[me]}) "
                           f"imports {target} ({other}, floor {FLOOR[other]})")
    assert not bad, "imports that run up or sideways:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n] if n in stack else [m, n])
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_local_imports_only_for_start_up_time():
    bad = [f"{p.relative_to(PKG.parent)}:{line} imports {t} inside a function"
           for p in PKG.rglob("*.py") if _area(_module(p)) not in LOCAL_IMPORTS_ALLOWED
           for t, line, local in _imports(p) if local]
    assert not bad, "\n".join(bad)


def test_trainer_is_built_in_one_place():
    """`Trainer(` is constructed in exactly one function outside the tests."""
    sites = []
    for p in [*PKG.rglob("*.py"), *(PKG.parent / "benchmarks").glob("*.py")]:
        tree = ast.parse(p.read_text())
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(f):
                    if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                            and n.func.id == "Trainer"):
                        sites.append(f"{p.name}:{f.name}")
    assert sites == ["assemble.py:build_trainer"], sites


@pytest.mark.parametrize("bad", ["trainlab.launch.job", "trainlab.report.figures"])
def test_the_checker_sees_an_upward_import(tmp_path, bad, monkeypatch):
    """Guard the guard: an engine module importing launch/report is reported."""
    fake = tmp_path / "trainlab"
    (fake / "engine").mkdir(parents=True)
    (fake / "engine" / "x.py").write_text(f"import {bad}\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    with pytest.raises(AssertionError, match="engine/x.py"):
        test_imports_only_run_down()
