"""The shape the server's code keeps so that a newcomer can walk it: no function in
signaling/, media/ or recordings/ longer than 60 lines, no module longer than 500."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("signaling", "media", "recordings")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def modules() -> list[Path]:
    found = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(found) > 50  # the packages are where this test expects them
    return found


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}  # fmt: skip
    assert long == {}


def test_no_function_over_60_lines():
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert long == {}
