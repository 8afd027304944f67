"""One problem vocabulary: every type the code raises is defined once, spelled once, documented,
and the SDK and the worker speak it too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharpness_client.errors import PROBLEM_KINDS, PROBLEM_NAMESPACE, problem_kind
from sharpness_client.types import Problem as ClientProblem
from tasks.contract import problem_types
from tasks.contract.problem_types import NAMESPACE, TYPES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("service", "tasks")
VOCABULARY = ROOT / "tasks" / "contract" / "problem_types.py"

# Callables whose slug parameter is not named `slug`: name → (position, keyword).
KIND_PARAMETERS = {
    name: (3, "kind")
    for name in ("RunError", "LoadError", "DeviceUnavailable", "CheckpointMismatch", "problem")
}
# Arguments that pass on a slug chosen elsewhere (the literal is checked where it is written).
PASS_THROUGH = {"slug", "kind", "e.slug", "self.slug", "e.kind", "exc.slug"}


def _files() -> Iterator[Path]:
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path != VOCABULARY:
                yield path


def _slug_parameters(trees: dict[Path, ast.Module]) -> dict[str, tuple[int, str]]:
    """Every function or class in the tree that takes a `slug` argument, and where."""
    found = dict(KIND_PARAMETERS)
    for tree in trees.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef | ast.FunctionDef):
                continue
            func = _init(node)
            if func is None:
                continue
            names = [a.arg for a in func.args.args]
            if "slug" in names:
                offset = 1 if names and names[0] in ("self", "cls") else 0
                found[node.name] = (names.index("slug") - offset, "slug")
    found["uri"] = (0, "slug")
    return found


def _init(node: ast.FunctionDef | ast.ClassDef) -> ast.FunctionDef | None:
    if isinstance(node, ast.FunctionDef):
        return node
    return next(
        (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
    )


def _default(node: ast.FunctionDef | ast.ClassDef, name: str) -> ast.expr | None:
    """The default value of parameter `name`, if it has one."""
    func = _init(node)
    if func is None:
        return None
    args, defaults = func.args.args, func.args.defaults
    by_name = dict(zip([a.arg for a in args[len(args) - len(defaults) :]], defaults, strict=True))
    return by_name.get(name)


def _raised() -> tuple[dict[str, list[str]], list[str]]:
    """(slug → where it is written, arguments that are neither a literal nor a pass-through)."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in _files()}
    params = _slug_parameters(trees)
    used: dict[str, list[str]] = {}
    odd: list[str] = []

    def note(value: ast.expr, where: str) -> None:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            used.setdefault(value.value, []).append(where)
        elif isinstance(value, ast.IfExp):
            note(value.body, where)
            note(value.orelse, where)
        elif ast.unparse(value) not in PASS_THROUGH:
            odd.append(f"{where}: {ast.unparse(value)}")

    for path, tree in trees.items():
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in params:
                default = _default(node, params[node.name][1])
                if default is not None:
                    note(default, f"{rel}:{node.lineno} (default)")
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in params:
                continue
            position, keyword = params[name]
            where = f"{rel}:{node.lineno}"
            value = next((k.value for k in node.keywords if k.arg == keyword), None)
            if value is None and len(node.args) > position:
                value = node.args[position]
            if value is not None:
                note(value, where)
    return used, odd


def test_every_slug_the_code_raises_is_defined_and_every_defined_one_is_raised() -> None:
    used, odd = _raised()
    assert not odd, f"slugs built at run time (write them as literals): {odd}"
    undefined = {s: w for s, w in used.items() if s not in TYPES}
    assert not undefined, (
        f"define these problem types in tasks/contract/problem_types.py: {undefined}"
    )
    unused = sorted(set(TYPES) - set(used))
    assert not unused, f"defined in tasks/contract/problem_types.py but raised nowhere: {unused}"


def test_the_scan_sees_the_raising_sites() -> None:
    """The scan would catch a bad slug: it finds the sites it is meant to check."""
    used, _ = _raised()
    assert any(w.startswith("service/") for w in used["not-found"])
    assert any(w.startswith("tasks/") for w in used["time-limit"])  # the worker's
    assert "service/problems.py" in " ".join(used["validation"])


def test_the_namespace_is_spelled_in_one_module() -> None:
    spelled = [
        str(p.relative_to(ROOT))
        for p in _files()
        if "urn:sharpness:problem" in p.read_text() or "sharpness.dev/problems" in p.read_text()
    ]
    assert spelled == [], f"use tasks.contract.problem_types.uri(slug) instead: {spelled}"


def test_slugs_are_well_formed_and_uris_are_ours() -> None:
    for slug, t in TYPES.items():
        assert t.slug == slug and t.uri == NAMESPACE + slug
        assert problem_types.uri(slug) == t.uri
        assert 400 <= t.status < 600 and t.meaning.endswith(".")
    with pytest.raises(ValueError, match="lowercase words"):
        problem_types.uri("Not Found")


def test_former_worker_types_read_as_current_ones() -> None:
    assert problem_types.current("https://sharpness.dev/problems/time-limit") == (
        NAMESPACE + "time-limit"
    )
    assert problem_types.current("about:blank") == "about:blank"
    assert problem_types.slug_of(NAMESPACE + "not-found") == "not-found"
    assert problem_types.slug_of("https://example.com/x") is None


def test_sdk_knows_the_same_kinds() -> None:
    assert PROBLEM_NAMESPACE == NAMESPACE
    assert set(PROBLEM_KINDS) == set(TYPES), set(PROBLEM_KINDS) ^ set(TYPES)
    p = ClientProblem(type=NAMESPACE + "time-limit", title="Time limit exceeded", status=500)
    assert problem_kind(p) == "time-limit"
    assert problem_kind(ClientProblem(title="Not found", status=404)) is None  # about:blank


def test_docs_describe_every_type() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    missing = [slug for slug, t in TYPES.items() if f"| `{slug}` | {t.status} |" not in text]
    assert not missing, f"docs/api.md (Problems) lacks: {missing}"


def test_worker_problems_use_the_vocabulary() -> None:
    from tasks.worker.errors import LoadError, problem
    from tasks.worker.errors import at as _at

    e = LoadError("CUDA not available", "no CUDA", status=503, kind="device-unavailable")
    assert e.type == NAMESPACE + "device-unavailable"
    moved = _at("model", e)  # the field prefix keeps the kind
    assert moved.type == e.type and moved.detail == "model: no CUDA" and moved.status == 503
    assert problem("Job failed", "x").type == NAMESPACE + "job-failed"
