"""Layers run one way (read from the source with ast, every import, also inside functions):
the entrypoints, the CLI and Qt on top; then the client side (``core.runs``, ``core.cluster``);
then the jobs (``core.training``, ``core.apply``); then ``core.sam`` and ``core.dataset``; then
the bottom layer (the modules directly in ``core``). Nothing reaches up, and module-level
imports have no cycles. The rules are the ones each package's ``__init__`` docstring states."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "napari_raysam"
C = "napari_raysam.core"
TOP = ("napari_raysam.train", "napari_raysam.probe", "napari_raysam.cli",
       "napari_raysam._qt", "napari_raysam.demo", "napari_raysam.napari_entry")
#: package -> the napari_raysam packages it must never import.
BANNED = {
    f"{C}.runs": TOP,
    f"{C}.cluster": (*TOP, f"{C}.runs", f"{C}.training", f"{C}.apply", f"{C}.sam",
                     f"{C}.dataset"),
    f"{C}.training": (*TOP, f"{C}.runs", f"{C}.cluster", f"{C}.apply"),
    f"{C}.apply": (*TOP, f"{C}.runs", f"{C}.cluster", f"{C}.training"),
    f"{C}.sam": (*TOP, f"{C}.runs", f"{C}.cluster", f"{C}.training", f"{C}.apply"),
    f"{C}.dataset": (*TOP, f"{C}.runs", f"{C}.cluster", f"{C}.training", f"{C}.apply",
                     f"{C}.sam"),
}
SUBPACKAGES = tuple(BANNED)


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the napari_raysam modules ``path`` imports."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("napari_raysam")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("napari_raysam"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import x`
    return out


def _files(prefix: str) -> list[Path]:
    return [p for p in PKG.rglob("*.py") if _module(p).startswith(prefix)]


def _hits(imports: set[str], banned: tuple[str, ...]) -> set[str]:
    return {i for i in imports if any(i == b or i.startswith(b + ".") for b in banned)}


def test_core_never_imports_the_entrypoints_the_cli_or_qt():
    bad = {_module(p): _hits(_imports(p), TOP) for p in _files(C)}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_each_layer_imports_only_downwards(package):
    bad = {_module(p): _hits(_imports(p), BANNED[package]) for p in _files(package)}
    assert not {k: v for k, v in bad.items() if v}


def test_the_bottom_layer_imports_only_the_bottom_layer():
    bottom = [p for p in (PKG / "core").glob("*.py")]
    assert {p.stem for p in bottom} >= {"errors", "paths", "storage", "model_store"}
    bad = {_module(p): _hits(_imports(p), (*TOP, *SUBPACKAGES)) for p in bottom}
    assert not {k: v for k, v in bad.items() if v}


def test_every_package_says_what_it_owns_and_may_import():
    for init in (PKG / "core").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc and len(doc) > 80, init


def test_the_rules_catch_an_upward_import():
    # the checker itself: an upward import written into a copy of a module is found
    fake = PKG / "core" / "sam" / "segment.py"
    imports = _imports(fake) | {f"{C}.runs.submit"}
    assert _hits(imports, BANNED[f"{C}.sam"]) == {f"{C}.runs.submit"}


def test_no_import_cycles_at_module_level():
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {m: {i for i in _imports(p, top_level_only=True) if i in modules and i != m}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError(" -> ".join([*stack[stack.index(n):], n]))
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
