"""The layering, checked from the source: which segflow package may import which.

The rule of data flow: ``schemas`` ← ``pipelines``, ``schemas`` ← ``trainer``; the three Beam jobs do not import
each other (evaluate reads infer's output layout, ``pipelines.infer.outputs``, and nothing else of infer); the
shared plumbing (``pipelines.common``) and the dataset registry (``pipelines.datasets``) import no job; nothing
that ships to workers imports the developer tools (``pipelines.tools``, which setup.py leaves out of the
distribution); and no segflow module imports itself back through others (no cycles).

Every ``import``/``from ... import`` counts, at module level or inside a function (a lazy import still couples the
two), and so do ``importlib.import_module("...")`` and ``__import__("...")`` with a literal name. The checker works
on ``{module name: source}``, so the tests below also feed it a module with a forbidden import and expect the
violation: the check cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Iterator, NamedTuple, Optional

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "pipelines", "trainer")
JOBS = ("pipelines.preprocess", "pipelines.infer", "pipelines.evaluate")
# (importing job, imported module) pairs allowed across jobs: evaluate finds the masks where infer wrote them.
CROSS_JOB_ALLOWED = {("pipelines.evaluate", "pipelines.infer.outputs")}
TOOLS = "pipelines.tools"
# The light modules the jobs share with the trainer: they import schemas and each other, nothing else of segflow.
SHARED = "pipelines.shared"
# Worker-side packages that no job may be imported by (a job sits on top of them, never below).
BELOW_THE_JOBS = ("pipelines.common", "pipelines.datasets")
# Upward imports the tree has today, each to be removed by the issue-13 work named beside it; every other import is
# checked. When one is removed, test_tolerated_imports_still_exist fails: delete its entry here then.
TOLERATED: set[tuple[str, str]] = set()


class Import(NamedTuple):
    importer: str
    imported: str
    line: int


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _job_of(module: str) -> Optional[str]:
    return next((job for job in JOBS if within(module, job)), None)


def read_tree(root: pathlib.Path = ROOT) -> dict[str, str]:
    """``{module name: source}`` of every module in segflow's packages (``__init__`` as the package's name)."""
    sources = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _is_package(module: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(module + ".") for other in sources)


def _literal_import_call(node: ast.Call) -> Optional[str]:
    """The name in ``importlib.import_module("x")`` / ``__import__("x")`` when it is a literal."""
    func = node.func
    named = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(module: str, source: str, sources: dict[str, str]) -> Iterator[Import]:
    """The segflow modules ``module`` imports. ``from P import name`` is ``P.name`` when that is a module."""
    package = module if _is_package(module, sources) else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=module)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base for alias in node.names]
        elif isinstance(node, ast.Call) and (name := _literal_import_call(node)):
            names = [name]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield Import(module, name, node.lineno)


def _rule_broken(edge: Import) -> Optional[str]:
    """Why ``edge`` breaks the layering, or None."""
    importer, imported = edge.importer, edge.imported
    if within(importer, "trainer") and not any(within(imported, p) for p in ("trainer", "schemas", SHARED)):
        return f"trainer imports only schemas and {SHARED} (and itself)"
    if within(importer, "schemas") and not within(imported, "schemas"):
        return "schemas imports neither pipelines nor trainer"
    if within(importer, SHARED) and not (within(imported, SHARED) or within(imported, "schemas")):
        return f"{SHARED} imports only schemas (and itself)"
    if not within(importer, TOOLS) and within(imported, TOOLS):
        return f"{TOOLS} (sample data, the demo) is not shipped to workers: nothing outside it imports it"
    job, imported_job = _job_of(importer), _job_of(imported)
    if job and imported_job and imported_job != job and (job, imported) not in CROSS_JOB_ALLOWED:
        allowed = ", ".join(f"{a} → {b}" for a, b in sorted(CROSS_JOB_ALLOWED))
        return f"a job imports no other job (the one exception: {allowed})"
    for below in BELOW_THE_JOBS:
        if within(importer, below) and imported_job:
            return f"{below} imports no job"
    return None


def _cycles(edges: list[Import], sources: dict[str, str]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list of names."""
    graph: dict[str, set[str]] = {module: set() for module in sources}
    for edge in edges:
        if edge.imported in graph and edge.imported != edge.importer:
            graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def all_imports(sources: dict[str, str]) -> list[Import]:
    return [edge for module, source in sorted(sources.items()) for edge in imports_of(module, source, sources)]


def violations(sources: dict[str, str]) -> list[str]:
    """One line per forbidden import and per import cycle; empty when the layering holds."""
    edges = [edge for edge in all_imports(sources) if (edge.importer, edge.imported) not in TOLERATED]
    found = [
        f"{edge.importer}:{edge.line} imports {edge.imported}: {why}" for edge in edges if (why := _rule_broken(edge))
    ]
    found += [f"import cycle: {' ↔ '.join(group)}" for group in _cycles(edges, sources)]
    return found


# ------------------------------------------------------------------------------------------------ the tree itself
def test_the_tree_keeps_its_layering():
    sources = read_tree()
    assert {"schemas", "pipelines", "trainer", "pipelines.infer.outputs"} <= set(sources)
    assert violations(sources) == []


# What each package holds: ``schemas`` the contracts between stages and with users, nothing that runs a program.
SCHEMAS_CONTRACTS = {
    "schemas",
    "schemas.class_balance",  # the class weights a dataset's metadata records
    "schemas.errors",  # the error kinds and their exit statuses
    "schemas.features",  # the record's feature keys
    "schemas.label_tables",  # the official label tables (VOC, ADE20K) the label definitions read
    "schemas.labels",  # the label definitions
    "schemas.metadata",  # the dataset metadata file
    "schemas.model_contract",  # what a trained model serves
    "schemas.records",  # the split names and the shard file-name rule preprocess writes and the trainer reads
    "schemas.scores",  # the one IoU rule
    "schemas.strict_json",  # how contract files are written and read
    "schemas.transform",  # the shared tf.Transform preprocessing
}


def test_schemas_holds_only_the_contracts():
    """A module added to ``schemas`` must be a contract and be named here; the runtime lives in pipelines.shared."""
    found = {module for module in read_tree() if within(module, "schemas")}
    assert found == SCHEMAS_CONTRACTS
    shared = {module for module in read_tree() if within(module, SHARED)}
    assert {
        f"{SHARED}.cli",
        f"{SHARED}.folders",
        f"{SHARED}.ownership",
        f"{SHARED}.pixel_rules",
        f"{SHARED}.pixels_host",
        f"{SHARED}.pixels_graph",
        f"{SHARED}.processes",
    } <= shared


def test_the_checker_sees_the_trees_own_imports():
    """Guards against a checker that passes by reading nothing: known imports of the tree are found."""
    edges = {(edge.importer, edge.imported) for edge in all_imports(read_tree())}
    assert ("pipelines.evaluate.job", "pipelines.infer.outputs") in edges  # the allowed cross-job import
    assert ("trainer.task", "trainer.config") in edges
    assert ("trainer.training", "trainer.callbacks") in edges  # inside a function
    assert ("pipelines.evaluate.options", "pipelines.datasets") in edges  # importlib.import_module("...")


def test_tolerated_imports_still_exist():
    """A tolerated upward import that is gone must leave TOLERATED too, or the list would excuse its return."""
    edges = {(edge.importer, edge.imported) for edge in all_imports(read_tree())}
    assert sorted(TOLERATED - edges) == [], "no longer imported: delete these from TOLERATED"


# ------------------------------------------------------------------------------------------------ the checker fails
@pytest.mark.parametrize(
    "module, source, rule",
    [
        ("trainer._probe", "from pipelines.common import storage\n", "trainer imports only schemas"),
        ("trainer.models._probe", "def f():\n    import pipelines.datasets\n", "trainer imports only schemas"),
        ("schemas._probe", "import trainer.config\n", "schemas imports neither"),
        ("schemas._probe", "from pipelines.shared import cli\n", "schemas imports neither"),
        ("pipelines.shared._probe", "from pipelines.common import storage\n", "pipelines.shared imports only schemas"),
        ("pipelines.shared._probe", "import trainer.data\n", "pipelines.shared imports only schemas"),
        ("trainer._probe", "from pipelines.preprocess import records\n", "trainer imports only schemas"),
        ("schemas._probe", "from pipelines.infer import outputs\n", "schemas imports neither"),
        ("pipelines.preprocess._probe", "from pipelines.infer import job\n", "a job imports no other job"),
        ("pipelines.infer._probe", "from ..preprocess import records\n", "a job imports no other job"),
        ("pipelines.evaluate._probe", "from pipelines.infer.job import run\n", "a job imports no other job"),
        ("pipelines.infer._probe", "from pipelines.evaluate import report\n", "a job imports no other job"),
        (
            "pipelines.common._probe",
            "def f():\n    from pipelines.evaluate import job\n",
            "pipelines.common imports no job",
        ),
        ("pipelines.datasets._probe", "import pipelines.preprocess.records\n", "pipelines.datasets imports no job"),
        (
            "pipelines.common._probe",
            "import importlib\nimportlib.import_module('pipelines.tools.synthetic')\n",
            "is not shipped to workers",
        ),
        ("pipelines.preprocess._probe", "from pipelines.tools import synthetic\n", "is not shipped to workers"),
    ],
)
def test_an_upward_import_is_a_violation(module, source, rule):
    sources = dict(read_tree(), **{module: source})
    found = violations(sources)
    assert len(found) == 1 and found[0].startswith(f"{module}:") and rule in found[0], found


def test_an_import_cycle_is_a_violation():
    sources = dict(
        read_tree(),
        **{
            "schemas._probe_a": "from schemas import _probe_b\n",
            "schemas._probe_b": "def f():\n    import schemas._probe_a\n",
        },
    )
    assert violations(sources) == ["import cycle: schemas._probe_a ↔ schemas._probe_b"]


@pytest.mark.parametrize(
    "module, source",
    [
        ("pipelines.evaluate._probe", "from pipelines.infer import outputs\n"),  # the one cross-job import
        ("pipelines.evaluate._probe", "from pipelines.infer.outputs import MASKS_DIR\n"),
        ("pipelines.preprocess._probe", "from pipelines.datasets import pet\nfrom pipelines.common import storage\n"),
        ("pipelines.datasets._probe", "from pipelines.common import hashing\nfrom schemas import labels\n"),
        ("pipelines.tools._probe", "from pipelines.infer import job\nfrom pipelines.tools import synthetic\n"),
        ("trainer._probe", "from schemas import features\nimport tensorflow\n"),
        ("trainer._probe", "from pipelines.shared import cli, ownership\n"),
        ("pipelines.shared._probe", "from schemas.errors import UsageError\nfrom pipelines.shared import processes\n"),
    ],
)
def test_allowed_imports_are_not_violations(module, source):
    assert violations(dict(read_tree(), **{module: source})) == []
