"""The folders show the architecture: imports run one way, and no module is too long."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imagesmith"
#: lowest first: a module may import from its own folder and the folders before it
#: (docs/architecture.md explains each)
ORDER = ["host", "cache", "disk", "config", "repro", "outputs", "stages", "build", "boot", "cli"]
#: top-level modules every folder may use
BASE = {"errors", "redact", "schema", "__version__"}
MAX_LINES = 500


def folder_level(module: str) -> int | None:
    """The level of an imported module (None: not one of imagesmith's folders)."""
    parts = module.split(".")
    if parts[0] != "imagesmith":
        return None
    if len(parts) == 1 or parts[1] in BASE:
        return -1
    return ORDER.index(parts[1]) if parts[1] in ORDER else None


def own_level(module: str) -> int:
    """The level of a module of the package: its folder's, -1 for the shared top-level
    modules, above every folder for the entry point (``__main__``)."""
    top = module.split(".")[1]
    if top in BASE or top == "__init__":
        return -1
    return ORDER.index(top) if top in ORDER else len(ORDER)


def imported(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "imagesmith":
                found += [f"imagesmith.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def modules() -> list[tuple[str, Path]]:
    return [
        (".".join(("imagesmith", *path.relative_to(PACKAGE).with_suffix("").parts)), path)
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_every_folder_is_in_the_order() -> None:
    folders = {path.parent.name for _, path in modules() if path.parent != PACKAGE} - {"fs"}
    assert folders == set(ORDER)


def test_imports_run_one_way() -> None:
    wrong = []
    for name, path in modules():
        mine = own_level(name)
        for target in imported(ast.parse(path.read_text(encoding="utf-8"))):
            level = folder_level(target)
            if level is not None and level > mine:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_the_check_sees_a_wrong_import() -> None:
    tree = ast.parse("from imagesmith.stages import plan\n")
    assert own_level("imagesmith.disk.ids") < (folder_level(imported(tree)[0]) or 0)


def test_no_module_is_over_500_lines() -> None:
    long = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_suite_s_longest_modules_exist() -> None:
    """A module renamed in LONGEST_FIRST (tests/conftest.py) would quietly lose its place."""
    from tests.conftest import LONGEST_FIRST

    tests = Path(__file__).parent
    assert [m for m in LONGEST_FIRST if not (tests / m).is_file()] == []
