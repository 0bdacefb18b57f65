"""The one-way package dependencies of DESIGN.md, checked by parsing every import."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "swarm", "trainer", "node")
# package -> project packages it may import
ALLOWED = {
    "ledger": set(),
    "trainer": set(),
    "swarm": {"ledger"},
    "node": {"ledger", "swarm", "trainer"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package] - {package})
        for f in files
    }
    assert not {f: v for f, v in bad.items() if v}, "imports against DESIGN.md's layering"


def test_checker_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import node.cli\nfrom swarm import peer\nfrom . import local\nimport os\n")
    assert imported_packages(probe) == {"node", "swarm"}
