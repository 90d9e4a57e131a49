"""The structure check of issue #14 (scripts/check_structure.py): it finds cycles, and the tree passes it."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_structure", ROOT / "scripts" / "check_structure.py")
check_structure = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_structure)


def test_cycle_finder():
    assert check_structure.cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) == []
    assert check_structure.cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 3}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_function_local_imports_are_found_and_type_checking_ones_skipped():
    tree = ast.parse("import os\nif TYPE_CHECKING:\n    import x\ndef f():\n    from . import y\n")
    found = [(n.__class__.__name__, local) for n, local in check_structure._imports(tree)]
    assert found == [("Import", False), ("ImportFrom", True)]


def test_the_tree_is_within_the_limits(capsys):
    assert check_structure.main([]) == 0
    assert "structure: OK" in capsys.readouterr().out
