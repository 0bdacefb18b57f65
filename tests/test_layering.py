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


# -- the node's rooms (node/__init__.py): what each may not know

def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute and dotted ("node.research.loop", "asyncio")."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from node.research import loop` imports node.research.loop
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _matches(module: str, banned: tuple[str, ...]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


NODE = ROOT / "node"
# room -> modules (and their submodules) it must not import
FORBIDDEN = {
    # the web knows the node only through node/web/backend.py's Backend
    "web": ("node.research.loop", "node.market.loop", "node.wiring", "node.live", "node.cli", "node.client",
            "node.sim", "swarm.peer", "trainer"),
    # clients speak HTTP to a running node: what they know of the wire is node/contract.py
    "client": ("ledger", "swarm", "trainer", "node.research", "node.market", "node.web", "node.sim",
               "node.wiring", "node.live"),
    "research": ("node.web", "node.client", "node.sim", "node.cli", "node.wiring", "node.live"),
    "market": ("node.web", "node.client", "node.sim", "node.cli", "node.wiring", "node.live"),
}
# pure policy modules: numbers and state in, decisions out; no event loop, no IO libraries, no clock
PURE = ("research/admission.py", "research/noise.py", "research/program.py", "research/proposer.py",
        "research/screening.py", "research/verifier.py", "research/waves.py", "market/policy.py",
        "web/views.py", "web/charts.py", "sim/simulate.py", "sim/simwork.py")
IMPURE = ("asyncio", "aiohttp", "aiosqlite", "sqlite3", "subprocess", "socket", "time", "node.research.loop",
          "ledger.store", "swarm")


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_node_rooms_keep_their_boundaries(room: str) -> None:
    bad = {}
    for path in sorted((NODE / room).rglob("*.py")):
        found = sorted(m for m in imported_modules(path) if _matches(m, FORBIDDEN[room]))
        if found:
            bad[str(path.relative_to(ROOT))] = found
    assert not bad, f"node/{room}/ imports what node/__init__.py says it must not know"


@pytest.mark.parametrize("module", PURE)
def test_pure_policy_modules_do_no_io(module: str) -> None:
    path = NODE / module
    assert path.exists(), f"{module} moved: update PURE"
    assert not sorted(m for m in imported_modules(path) if _matches(m, IMPURE))


def test_room_checker_sees_submodule_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from node.research import loop\nimport asyncio.tasks\n")
    found = imported_modules(probe)
    assert _matches("node.research.loop", ("node.research.loop",)) and "node.research.loop" in found
    assert _matches("asyncio.tasks", IMPURE) and not _matches("asynciox", IMPURE)
