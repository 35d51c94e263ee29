"""The house rules, checked on the source: no import cycles, dependencies point one way
(workers/ -> delivery/ -> presence/), tooling (bench/, tests/) stays out of the runtime
packages, the dev kit (workers/devkit/) serves the demo, the tests and the benchmarks but no
other runtime module, and SQL is written in the store package only. Every import counts,
including those inside functions: a lazy import is still a dependency, only hidden from the
reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("presence", "delivery", "workers")
PACKAGES = (*RUNTIME, "bench")
TOOLING = {"bench", "tests"}
# What each package may import from the project (besides itself).
ALLOWED = {
    "presence": set(),
    "delivery": {"presence"},
    "workers": {"delivery", "presence"},
    "bench": {"workers", "delivery", "presence"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom,
              modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    # ``from pkg import sub`` depends on the submodule ``pkg.sub`` when there is one, else on
    # ``pkg`` itself (a name defined in its ``__init__``).
    subs = [f"{base}.{alias.name}" for alias in node.names]
    return [s if s in modules else base for s in subs]


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (anywhere in its source)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(t for t in _imported(name, path, node, modules) if t in modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def all_imports() -> dict[str, set[str]]:
    """Project module -> every top-level package it imports (project or not)."""
    modules = _modules()
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        tops: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                tops.update(t.split(".")[0] for t in _imported(name, path, node, modules))
        out[name] = tops
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_graph_sees_the_packages() -> None:
    graph = import_graph()
    assert "workers.app" in graph and "presence.state" in graph and "bench.e2e" in graph
    assert "delivery.celery_app" in graph["workers.app"]
    assert {"workers", "psycopg"} <= all_imports()["bench.e2e"]


def test_no_import_cycles() -> None:
    assert find_cycles(import_graph()) == []


def test_dependencies_point_one_way() -> None:
    wrong = sorted(
        f"{mod} imports {dep}"
        for mod, deps in import_graph().items()
        for dep in deps
        if (top := dep.split(".")[0]) != mod.split(".")[0]
        and top not in ALLOWED[mod.split(".")[0]]
    )
    assert wrong == []


def test_runtime_packages_import_no_tooling() -> None:
    wrong = sorted(
        f"{mod} imports {', '.join(sorted(tops & TOOLING))}"
        for mod, tops in all_imports().items()
        if mod.split(".")[0] in RUNTIME and tops & TOOLING
    )
    assert wrong == []


def test_benchmarks_import_no_tests() -> None:
    # What tests and benchmarks share lives in the dev kit, not in tests/support/.
    assert sorted(mod for mod, tops in all_imports().items()
                  if mod.split(".")[0] == "bench" and "tests" in tops) == []


# The dev kit holds tooling the demo needs (processes, the local cluster), so it sits in
# workers/; the rest of the runtime never reaches it.
DEVKIT = "workers.devkit"
DEVKIT_USERS = {"workers.demo.stack"}


def test_only_the_demo_uses_the_dev_kit() -> None:
    wrong = sorted(
        f"{mod} imports {dep}"
        for mod, deps in import_graph().items()
        for dep in deps
        if mod.split(".")[0] in RUNTIME and not mod.startswith(DEVKIT)
        and mod not in DEVKIT_USERS and dep.startswith(DEVKIT)
    )
    assert wrong == []


def test_vocabulary_needs_nothing() -> None:
    # The pure policy and the simulation import it: it must not drag in the store or Celery.
    assert all_imports()["delivery.vocabulary"] <= {"__future__", "enum"}
    assert all_imports()["delivery.task_names"] <= {"__future__"}


def test_task_names_are_spelt_once() -> None:
    from delivery import task_names

    names = {v for k, v in vars(task_names).items() if k.endswith("_TASK")}
    assert {"delivery.send", "delivery.route", "delivery.push"} <= names
    found = []
    for mod, path in _modules().items():
        if mod == "delivery.task_names":
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        found += [f"{mod}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value in names
                  and id(n) not in docstrings]
    assert found == []


# SQL is written in the store package only; besides it, the schema (models.py) and the engine
# (db.py) use SQLAlchemy, and migrations/ sits outside the packages.
SQL_HOMES = ("delivery.store", "delivery.db", "delivery.models")
# Tooling that still writes SQL, and why.
SQL_EXCEPTIONS: dict[str, str] = {}
SQL_CONSTRUCTS = {
    "select", "insert", "update", "delete", "text", "func", "and_", "or_", "not_", "exists",
    "case", "literal", "literal_column", "bindparam", "column", "table", "tuple_", "union",
    "Table", "MetaData",
}


def sql_imports() -> dict[str, list[str]]:
    """Project module -> the SQL constructs it imports from SQLAlchemy (anywhere in its source):
    ``select``, ``text``, ... from ``sqlalchemy``, anything from its ``sql``, ``dialects`` or
    ``orm`` modules, or the whole library."""
    out: dict[str, list[str]] = {}
    for name, path in _modules().items():
        found: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [a.name for a in node.names if a.name.split(".")[0] == "sqlalchemy"
                          and a.name.split(".")[:2] != ["sqlalchemy", "exc"]]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                module = node.module or ""
                whole = module.split(".")[1:2] in (["sql"], ["dialects"], ["orm"])
                found += [f"{module}.{a.name}" for a in node.names
                          if whole or (module == "sqlalchemy" and a.name in SQL_CONSTRUCTS)]
        if found:
            out[name] = found
    return out


def test_sql_lives_in_the_store_package() -> None:
    found = sql_imports()
    assert "sqlalchemy.select" in found["delivery.store.messages"]  # the check sees imports
    wrong = sorted(f"{mod} imports {', '.join(names)}" for mod, names in found.items()
                   if not mod.startswith(SQL_HOMES) and mod not in SQL_EXCEPTIONS)
    assert wrong == []
