"""The import graph's rules: storage never imports the gateway; no test imports a test module."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (absolute imports)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            # "from tests import test_x" names the module in the alias
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def offenders(files: list[Path], bad: Callable[[str], bool]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in imported_modules(path)
        if bad(name)
    ]


def is_gateway(name: str) -> bool:
    return name == "gateway" or name.startswith("gateway.")


def is_test_module(name: str) -> bool:
    return name.rpartition(".")[2].startswith("test_")


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import gateway.metrics\nfrom tests import test_relay\nfrom tests.test_api import x\n")
    names = [name for _, name in imported_modules(sample)]
    assert [n for n in names if is_gateway(n)] == ["gateway.metrics"]
    assert sorted({n for n in names if is_test_module(n)}) == ["tests.test_api", "tests.test_relay"]
    assert not is_gateway("gatewayish") and not is_test_module("tests.storage_fixtures")


def test_storage_imports_nothing_from_the_gateway() -> None:
    files = sorted((ROOT / "storage").rglob("*.py"))
    assert files
    assert offenders(files, is_gateway) == []


def test_no_test_imports_a_test_module() -> None:
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert files
    assert offenders(files, is_test_module) == []


def test_storage_and_its_test_helpers_load_without_the_gateway() -> None:
    """Imported for real, in a fresh interpreter: what ``pytest tests/storage`` loads."""
    helpers = ["storage_builders", "storage_fixtures", "storage_writer", "processes", "outage"]
    modules = [f"storage.{p.stem}" for p in sorted((ROOT / "storage").glob("*.py")) if p.stem != "__init__"]
    modules += [f"tests.{name}" for name in helpers]
    modules += [f"tests.storage.{p.stem}" for p in sorted((ROOT / "tests" / "storage").glob("*.py"))]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'gateway' or m.startswith('gateway.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
