"""The layout stays what the architecture says (docs: CONTRIBUTING.md, "Layout").

Read from the source with ``ast``: modules of about 500 lines at most, functions of about 80
lines and 8 parameters (9 for two public writer methods), a private name used only in its own
module, numba only in ``_kernels``, and no path from the library into the extract package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "distillscope"
MODULES = sorted(SRC.rglob("*.py"))
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = {"__init__@StoreWriter": 9, "write_layer": 9}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _name(path: Path) -> str:
    return ".".join(("distillscope",) + path.relative_to(SRC).with_suffix("").parts).removesuffix(
        ".__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    for node in ast.walk(_tree(path)):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path.name}:{child.name}: {length} lines"
                args = child.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                count -= bool(args.args) and args.args[0].arg in ("self", "cls")
                owner = f"@{node.name}" if isinstance(node, ast.ClassDef) else ""
                limit = MAX_PARAMETERS.get(child.name + owner, MAX_PARAMETERS.get(child.name, 8))
                assert count <= limit, f"{path.name}:{child.name}: {count} parameters"


def test_private_names_stay_in_their_module():
    """``from .x import _name`` or ``x._name`` across modules: a private name used elsewhere
    should be public in its home module."""
    offences = []
    for path in MODULES:
        tree = _tree(path)
        imported_modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and not alias.name.startswith(("_kernels", "_scratch", "_errors",
                                                              "_version")):
                        offences.append(f"{path.name}: from {node.module} import {alias.name}")
                    if node.module is None or node.level:  # `from . import x as y`
                        imported_modules.add(alias.asname or alias.name)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id in imported_modules and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    offences.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offences, offences


def test_numba_lives_in_kernels_only():
    for path in MODULES:
        text = path.read_text()
        if path.name != "_kernels.py":
            assert "from numba import njit" not in text and "@njit" not in text, path.name


def test_the_library_never_imports_the_extract_package():
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] in ("distillscope_extract", "torch", "timm")
                           for n in names), f"{path.name} imports {names}"


def test_sub_packages_say_what_lives_there():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert {"metrics", "engine", "store", "results", "report", "cli"} <= packages
