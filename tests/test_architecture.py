"""The architecture's rules, checked on the sources with `ast` (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from trainer.config import TrainConfig
from trainer.families.table import FAMILIES

REPO = Path(__file__).resolve().parent.parent
FAMILY_PACKAGE = REPO / "trainer" / "families"


def product_sources() -> list[Path]:
    """Every .py of the product outside the family package: trainer/, ui/ and app.py."""
    files = [*(REPO / "trainer").rglob("*.py"), *(REPO / "ui").rglob("*.py"), REPO / "app.py"]
    return sorted(path for path in files if FAMILY_PACKAGE not in path.parents)


def _names_a_family(node: ast.AST | None, names: set[str]) -> bool:
    """A family-name string literal, or a tuple/set/list holding one."""
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.Set, ast.List)):
        return any(_names_a_family(element, names) for element in node.elts)
    return False


def _pattern_names_a_family(pattern: ast.pattern, names: set[str]) -> bool:
    if isinstance(pattern, ast.MatchValue):
        return _names_a_family(pattern.value, names)
    if isinstance(pattern, ast.MatchOr):
        return any(_pattern_names_a_family(option, names) for option in pattern.patterns)
    return False


def family_branches(source: str, names: set[str]) -> list[int]:
    """Line numbers of code that branches on, or looks up by, a family's name: a comparison (==, !=, in, not in)
    with one, a match case, a dict key or a subscript. A name passed on as data (an argument, a value) is not."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops) and any(
                _names_a_family(operand, names) for operand in (node.left, *node.comparators))
        elif isinstance(node, ast.match_case):
            hit = _pattern_names_a_family(node.pattern, names)
        elif isinstance(node, ast.Dict):
            hit = any(_names_a_family(key, names) for key in node.keys)
        elif isinstance(node, ast.Subscript):
            hit = _names_a_family(node.slice, names)
        else:
            continue
        if hit:
            found.append(node.lineno if hasattr(node, "lineno") else node.pattern.lineno)
    return sorted(found)


def test_no_code_outside_the_family_package_branches_on_a_family_name():
    names = set(FAMILIES)
    branches = [f"{path.relative_to(REPO)}:{line}" for path in product_sources()
                for line in family_branches(path.read_text(encoding="utf-8"), names)]
    assert branches == [], "family knowledge belongs in trainer/families/ (its table or its classes)"


def test_the_scan_sees_each_kind_of_branch():
    names = {"sd1", "flux"}
    code = ('a == "flux"\n"sd1" != b\nc in ("sd1", "sd2")\nd not in {"flux"}\nx = {"flux": 1}\ny = t["sd1"]\n'
            'match e:\n    case "flux" | "other":\n        pass\n'
            'f(group="flux")\nz = "flux" if g else "sd9"\nw = "sd2" == h\n')
    assert family_branches(code, names) == [1, 2, 3, 4, 5, 6, 8]


def test_the_table_lists_the_schemas_model_families():
    choices = get_args(TrainConfig.model_fields["model_family"].annotation)
    assert set(FAMILIES) == set(choices) - {"auto"}
    assert list(FAMILIES) == [choice for choice in choices if choice != "auto"]
