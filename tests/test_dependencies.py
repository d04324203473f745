"""Every distribution the package imports is declared by its distribution name, and no Qt
binding is pinned (the user's napari brings one; qtpy picks it)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_raysam"


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"napari_raysam", "__future__"}


def _declared() -> set[str]:
    reqs = [r for r in requires("napari-raysam") or [] if "extra ==" not in r]
    return {_normal(re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0]) for r in reqs}


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them (``bioimageio.core`` = ``bioimageio_core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_declared():
    dists = packages_distributions()
    declared = _declared()
    missing = {}
    for module in sorted(_imported_top_level()):
        names = {_normal(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_no_qt_binding_and_not_both_segment_anything_packages():
    declared = _declared()
    assert not declared & {"pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert "segment-anything-py" in declared and "segment-anything" not in declared
