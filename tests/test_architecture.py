"""The package's boundaries, read from its source: who may import docker, doit and the test bed."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lambdaimages"


def _imports() -> dict[str, set[str]]:
    """module path (relative to the package) -> top-level-qualified names it imports."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(PACKAGE))] = names
    return found


def _importers(prefix: str) -> set[str]:
    return {
        module for module, names in _imports().items() if any(n == prefix or n.startswith(prefix + ".") for n in names)
    }


def test_only_the_engine_module_imports_docker():
    assert _importers("docker") == {"engine.py"}


def test_only_the_task_glue_imports_doit():
    assert _importers("doit")
    assert {module for module in _importers("doit") if not module.startswith("tasks/")} == set()


def test_the_product_never_imports_the_test_bed():
    assert {module for module in _importers("lambdaimages.testbed") if not module.startswith("testbed/")} == set()
