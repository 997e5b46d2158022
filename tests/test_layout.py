"""The package follows the pipeline: one subpackage per stage, imports pointing down only (docs/design.md)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
# Pipeline order: a stage may import only the stages before it. engine/__init__.py and cli.py sit on top; the
# interfaces (the service and the commands) may also use the public API, ``engine`` itself.
ORDER = ["core", "language", "compiler", "runtime", "records", "outputs", "authoring", "population", "service",
         "commands"]
TOP = {"__init__", "cli"}
INTERFACES = {"service", "commands"}


def imports_of(path: Path, source: str | None = None) -> list[tuple[int, list[str], bool]]:
    """(line, the engine module imported as parts, at module level) for every import in ``path``, wherever it
    is (functions and ``if TYPE_CHECKING:`` included); relative imports resolved from the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]
    top_level = {id(n) for n in tree.body} | {
        id(s) for n in tree.body if isinstance(n, ast.If) for s in n.body}
    out = []
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "engine":
                base = node.module.split(".")
            else:
                continue
            # `from . import x` imports the module x when there is one
            targets = [[*base, a.name] if (ROOT.joinpath(*base, a.name).with_suffix(".py").is_file()
                                           or ROOT.joinpath(*base, a.name, "__init__.py").is_file()) else base
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "engine"]
        out += [(node.lineno, t, id(node) in top_level) for t in targets]
    return out


def stage_of(parts: list[str]) -> str:
    """engine.runtime.kb -> runtime; engine.cli -> cli; engine -> __init__."""
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def upward_imports(path: Path, source: str | None = None) -> list[str]:
    mine = stage_of(list(path.relative_to(ROOT).with_suffix("").parts))
    bad = []
    for line, target, _ in imports_of(path, source):
        theirs = stage_of(target)
        if theirs in (mine, "data") or mine in TOP or (theirs == "__init__" and mine in INTERFACES):
            continue
        if theirs in TOP or theirs not in ORDER or ORDER.index(theirs) > ORDER.index(mine):
            bad.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {'.'.join(target)} ({theirs})")
    return bad


MODULES = sorted(ENGINE.rglob("*.py"))


def test_every_module_belongs_to_a_stage() -> None:
    loose = [p.name for p in ENGINE.glob("*.py") if p.stem not in TOP]
    assert loose == [], f"modules outside a stage package: {loose}"
    packages = sorted(p.name for p in ENGINE.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted([*ORDER, "data"])


@pytest.mark.parametrize("stage", ORDER)
def test_each_stage_says_what_it_owns_and_may_import(stage: str) -> None:
    doc = importlib.import_module(f"engine.{stage}").__doc__
    assert doc and len(doc.split()) >= 10, f"engine/{stage}/__init__.py needs a docstring saying what it owns"
    if stage in ORDER[:8]:
        assert "import" in doc.lower(), f"engine/{stage}: say what the package may import"


def test_imports_point_down_the_pipeline() -> None:
    found = [imp for p in MODULES for imp in imports_of(p)]
    assert len(found) > 300  # the checker sees the package's imports, not an empty list
    bad = [b for p in MODULES for b in upward_imports(p)]
    assert bad == []


def test_an_upward_import_is_caught() -> None:
    path = ENGINE / "core" / "errors.py"
    assert upward_imports(path, "from ..runtime.kb import KnowledgeBase\n") == [
        "engine/core/errors.py:1: core imports engine.runtime.kb (runtime)"]
    assert upward_imports(path, "def f():\n    from engine.cli import main\n") == [
        "engine/core/errors.py:2: core imports engine.cli (cli)"]
    assert upward_imports(ENGINE / "runtime" / "kb.py", "from ..core import errors\n") == []
    assert upward_imports(ENGINE / "runtime" / "kb.py", "from .. import explain\n") == [
        "engine/runtime/kb.py:1: runtime imports engine (__init__)"]


def test_no_module_imports_a_module_that_imports_it() -> None:
    """Module-level imports (``if TYPE_CHECKING:`` included) form no cycle - e.g. ``runtime.result`` holds the
    score values and ``runtime.scores`` computes them, not the other way round as well."""
    graph: dict[str, set[str]] = {}
    for p in MODULES:
        me = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[me] = {".".join(t) for _, t, top in imports_of(p) if top} - {me}
    names = set(graph)
    graph = {k: {d for d in v if d in names and not k.startswith(d + ".") and not d.endswith(".__init__")}
             for k, v in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert "engine.runtime.scores" in graph["engine.runtime.evaluate"]
    assert cycles == []
