"""The import graph of the product code: no cycles, imports at the top, layers apart.

Read from the source (ast), not by importing: every `import` and `from ... import` of a project
module (service, tasks, sharpness_client), where it stands. A module's top-level imports form
the graph that must have no cycles; an import inside a function is allowed only where it
defers a heavy optional dependency on purpose and says so in a comment on its line or the
line above it containing "defer" (a gateway module that must not load torch at import, say).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # top-level package -> the folder that holds it
    "service": ROOT,
    "tasks": ROOT,
    "sharpness_client": ROOT / "clients" / "python",
}


def _module_name(path: Path) -> str:
    for package, base in PACKAGES.items():
        if path.is_relative_to(base / package):
            parts = path.relative_to(base).with_suffix("").parts
            return ".".join(parts).removesuffix(".__init__")
    raise ValueError(path)


MODULES: dict[str, Path] = {
    _module_name(p): p
    for package, base in PACKAGES.items()
    for p in sorted((base / package).rglob("*.py"))
}


def _resolve(name: str) -> str | None:
    """The project module `name` refers to (a module, or the module holding the name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> Iterator[tuple[ast.stmt, str, bool]]:
    """(statement, imported project module, at top level?) for every import in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    # imports under `if TYPE_CHECKING:` or try/except at module level count as top level
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            top |= {id(n) for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" for a in node.names] or [base]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                yield node, resolved, id(node) in top


def _is_type_checking(module: str, node: ast.stmt) -> bool:
    tree = ast.parse(MODULES[module].read_text())
    for block in tree.body:
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            if any(n is node or ast.dump(n) == ast.dump(node) for n in ast.walk(block)):
                return True
    return False


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for node, target, at_top in _imports(module):
            if at_top and not _is_type_checking(module, node):
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_product_code_has_no_import_cycles() -> None:
    """A package's __init__ importing its own modules is a cycle too when they import it
    back: each module imports what it needs from the module that holds it."""
    cycles = _cycles(_graph())
    assert not cycles, cycles


def test_project_modules_are_imported_at_the_top() -> None:
    """An import of a project module inside a function hides a cycle or a layer crossing;
    the only ones left defer a heavy dependency on purpose and say so ("defer")."""
    hidden = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node, target, at_top in _imports(module):
            if at_top:
                continue
            said = " ".join(lines[max(node.lineno - 2, 0) : node.end_lineno or node.lineno])
            if "defer" not in said.lower():
                hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}")
    assert not hidden, "\n".join(hidden)


def _reachable(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def test_the_gateway_reaches_no_engine_and_no_worker_module() -> None:
    """Every module the gateway imports, transitively, at the top or deferred: none is the
    engine's or the worker's (they need torch), so the gateway's image installs no torch."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for _, target, _ in _imports(module):
            graph[module].add(target)
    gateway = {m for m in MODULES if m.startswith("service.")}
    reached = _reachable(gateway, graph)
    bad = sorted(m for m in reached if m.startswith(("tasks.engine", "tasks.worker", "tasks.jobs")))
    assert not bad, bad
