"""conclave/sip is sans-IO: no module may import asyncio, socket, ssl, selectors or time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIP = Path(__file__).resolve().parents[2] / "conclave" / "sip"
FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "time"}
MODULES = sorted(SIP.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")
    return names


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) > 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SIP)))
def test_module_is_sans_io(path: Path) -> None:
    bad = _imported(path) & (FORBIDDEN | {"__import__"})
    assert not bad, f"{path} imports {sorted(bad)}"


def test_no_project_dependencies() -> None:
    """sip depends on nothing else in the project (ARCHITECTURE.md)."""
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("conclave.") or node.module.startswith(
                    "conclave.sip"
                ), f"{path} imports {node.module}"
