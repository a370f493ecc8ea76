"""The suite's markers say the truth: every test that reads ../shared data is marked ``shared`` (so
``-m "not shared"`` runs exactly the tests a fresh clone without it can run), and no test is marked ``shared`` for
nothing."""

from __future__ import annotations

import ast

from helpers import REPO

SHARED_CALLS = {"shared_path", "shared_file"}


def _marks(func: ast.FunctionDef) -> set[str]:
    out = set()
    for dec in func.decorator_list:
        node = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
            out.add(node.attr)
    return out


def _calls(func: ast.FunctionDef) -> set[str]:
    return {n.func.id for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def test_tests_reading_shared_data_are_marked_shared_and_only_they():
    unmarked, needless = [], []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")):
            uses = bool(_calls(func) & SHARED_CALLS)
            marked = "shared" in _marks(func)
            where = f"{path.relative_to(REPO)}::{func.name}"
            if uses and not marked:
                unmarked.append(where)
            if marked and not uses:
                needless.append(where)
    assert unmarked == [] and needless == []
