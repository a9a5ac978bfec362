"""The shape the server's code keeps so that a newcomer can walk it: no function in
signaling/, media/ or recordings/ longer than 60 lines, no module longer than 500,
and consults and sessions as typed records everywhere but in the store."""

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


def record_name(node: ast.expr) -> str | None:
    """``consult`` for ``consult``, ``self.consult`` or ``moved_session``: a name
    that says it holds a consult or a session."""
    name = node.id if isinstance(node, ast.Name) else (
        node.attr if isinstance(node, ast.Attribute) else None)  # fmt: skip
    if name and ("consult" in name.lower() or "session" in name.lower()):
        return name
    return None


def test_no_consult_or_session_indexed_as_a_dict_outside_the_store():
    """Consults and sessions are typed records (``signaling.model``); only the store
    (``signaling/store/``), which turns them to and from their stored form, sees
    them as dicts."""
    found = []
    for path in sorted((ROOT / "signaling").rglob("*.py")):
        if "store" in path.relative_to(ROOT / "signaling").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
                and (name := record_name(node.value))
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}[{node.slice.value!r}]")
    assert found == []
