"""The house rules that the import graph can check: one-way doors between the packages, and module size.

Doors run ``recipes → dar → {tokenizer, llama_ar, dart}``: the three model packages never import each other or
``dar``; no library module imports the tests, the recipes or ``dar.cli`` (the command line is an entry point only).
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("dar", "tokenizer", "llama_ar", "dart")
TEST_MODULES = {p.stem for p in (REPO / "tests").glob("*.py")} | {"tests"}
FORBIDDEN = {
    "tokenizer": {"llama_ar", "dart", "dar"},
    "llama_ar": {"tokenizer", "dart", "dar"},
    "dart": {"tokenizer", "llama_ar", "dar"},
    "dar": set(),
}
MAX_LINES = 400


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []


def _imports(path: Path, package: str | None = None) -> set[str]:
    """Every module name imported anywhere in the file (also inside functions), absolute form."""
    package = package or ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _library_files():
    return [(package, path) for package in LIBRARY for path in _modules(package)]


@pytest.mark.parametrize("package, path", _library_files(), ids=lambda x: str(x))
def test_library_modules_respect_the_doors(package, path):
    imported = {name.split(".")[0] for name in _imports(path)}
    crossing = sorted(imported & FORBIDDEN[package])
    assert not crossing, f"{path.relative_to(REPO)} imports {crossing}: {package} must not depend on them"
    into_tests = sorted(imported & (TEST_MODULES | {"recipes"}))
    assert not into_tests, (
        f"{path.relative_to(REPO)} imports {into_tests}: library code never imports tests/recipes"
    )


@pytest.mark.parametrize("path", [p for _, p in _library_files()] + _modules("recipes"), ids=str)
def test_nothing_but_the_entry_point_imports_the_cli(path):
    if path == REPO / "dar" / "cli.py":
        return
    assert not {"dar.cli"} & _imports(path) and "dar.cli" not in {
        n.rsplit(".", 1)[0] for n in _imports(path)
    }, (
        f"{path.relative_to(REPO)} imports dar.cli: shared code belongs in the library, not in the command line"
    )


@pytest.mark.parametrize("package, path", _library_files(), ids=lambda x: str(x))
def test_no_library_module_is_over_the_size_cap(package, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(REPO)} has {lines} lines (cap {MAX_LINES}): split it by concept"
    )


def test_the_checks_see_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from llama_ar import sampling\n    from . import config\n    import dar.cli\n"
    )
    imported = _imports(probe, package="tokenizer")
    assert {"llama_ar", "dar"} <= {name.split(".")[0] for name in imported} & FORBIDDEN["tokenizer"]
    assert "tokenizer.config" in imported and "dar.cli" in imported
