"""The package layout, read from the source: imports point down only, and no module imports
itself back through others (imports inside functions and under TYPE_CHECKING count too)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "beliefs", "memory", "policies", "envs", "train")
# What each package may import besides itself (a package, or one module of it): engine sits on
# top; train imports nothing, and its dependency-free vocabulary holds what every layer shares.
ALLOWED = {
    "engine": {"beliefs", "memory", "policies", "envs", "train"},
    "policies": {"beliefs", "train.vocabulary"},
    "beliefs": {"train.vocabulary"},
    "memory": {"train.vocabulary"},
    "envs": {"train"},
    "train": set(),
}


def allowed(package: str, target: str) -> bool:
    return target.split(".")[0] == package or any(
        target == other or target.startswith(f"{other}.") for other in ALLOWED[package])


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module that `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_imports_point_down_the_layers():
    modules = project_modules()
    wrong = []
    for name, path in modules.items():
        package = name.split(".")[0]
        wrong += [f"{name} imports {target}" for target in sorted(imports_of(path, modules))
                  if not allowed(package, target)]
    assert wrong == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle met by a depth-first walk, as the path that closes it."""
    cycles, done = [], set()

    def walk(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                walk(target, [*path, target])
        done.add(node)

    for name in sorted(graph):
        if name not in done:
            walk(name, [name])
    return cycles


def test_no_import_cycles_among_modules():
    modules = project_modules()
    # a package's __init__ importing its own modules is how it re-exports them, not a cycle
    graph = {name: {t for t in imports_of(path, modules) - {name} if not t.startswith(f"{name}.")}
             for name, path in modules.items()}
    assert find_cycles(graph) == []


def test_the_checks_see_imports_in_functions_and_under_type_checking(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from b import g\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n    import a\n")
    modules = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert find_cycles(graph) == [["a", "b", "a"]]


def test_engine_modules_stay_small():
    """The engine's modules are kept readable: at most about 350 lines each."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (REPO / "engine").glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 360} == {}
