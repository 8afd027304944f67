"""Architecture rules that keep the layers apart."""

import ast
import re
import subprocess
import sys
from pathlib import Path


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_catalogue_and_spec_import_no_torch_and_no_engine() -> None:
    mods = _modules_after(
        "import tasks.contract.spec, tasks.store.records\n"
        "from tasks.contract.measures import catalogue; catalogue.measures()"
    )
    assert "torch" not in mods
    assert not [m for m in mods if m.startswith("tasks.engine")]


def test_catalogue_lists_required_measures() -> None:
    from tasks.contract.measures import catalogue

    required = "lambda_max top_eigenvalues trace frobenius spectral_density adaptive_sharpness"
    assert set(required.split()) <= set(catalogue.measures())


ROOT = Path(__file__).resolve().parents[1]
STORES = {
    *(str(p.relative_to(ROOT)) for p in (ROOT / "tasks" / "store").glob("*.py")),
    "service/studies/store.py",
}
# the key prefix, alone or starting a key (not a problem URN, not "sharpness: <message>")
KEY = re.compile(r"(?<!urn:)sharpness:(?=[a-z{*]|$)")


def _sources(*tops: str) -> list[Path]:
    return [p for top in tops for p in sorted((ROOT / top).rglob("*.py"))]


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, with the literal parts of f-strings."""
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_redis_keys_are_spelled_only_in_the_stores() -> None:
    """Jobs, trajectories, studies, locks, idempotency keys and worker heartbeats are read and
    written through the store modules; nothing else names a key or the key prefix."""
    leaks = []
    for path in _sources("service", "tasks", "clients"):
        rel = str(path.relative_to(ROOT))
        if rel in STORES:
            continue
        tree = ast.parse(path.read_text(), rel)
        for line, text in _strings(tree):
            if KEY.search(text):
                leaks.append(f"{rel}:{line}: {text!r}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "tasks.store.records",
                "service.studies.store",
            ):
                leaks += [
                    f"{rel}:{node.lineno}: imports PREFIX" for a in node.names if a.name == "PREFIX"
                ]
    assert not leaks, f"add a store method instead: {leaks}"


def test_the_key_scan_finds_the_stores_keys() -> None:
    """The scan would see a key written elsewhere: it finds them where they belong."""
    tree = ast.parse((ROOT / "tasks" / "store" / "keys.py").read_text())
    assert any(KEY.search(text) for _, text in _strings(tree))
    assert not KEY.search("urn:sharpness:problem:not-found")
    assert KEY.search("sharpness:workers:") and KEY.search("sharpness:")
    assert not KEY.search("sharpness: cannot reach the service")


ENGINE_FORBIDDEN = ("celery", "fastapi", "starlette", "redis", "kombu", "service", "httpx")
ENGINE_MAY_IMPORT = ("tasks.engine.", "tasks.contract.")


def _engine_imports() -> list[tuple[str, int, str]]:
    """(file, line, module) for every import in tasks/engine, at top level or inside functions."""
    out = []
    for path in _sources("tasks/engine"):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                out += [(rel, node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.append((rel, node.lineno, node.module))
            elif isinstance(node, ast.ImportFrom):  # relative: stays inside the package
                out.append((rel, node.lineno, "tasks.engine"))
    return out


def test_engine_imports_no_service_layer() -> None:
    """The engine is plain torch: no Celery, FastAPI, Redis or gateway, and nothing of `tasks`
    outside `tasks.engine` but the contract, whose measure declarations it implements (the
    worker imports the engine, never the other way round)."""
    imports = _engine_imports()
    assert len(imports) > 50  # the scan reads the engine
    bad = [
        f"{rel}:{line}: {mod}"
        for rel, line, mod in imports
        if mod.split(".")[0] in ENGINE_FORBIDDEN
        or (mod.split(".")[0] == "tasks" and not (mod + ".").startswith(ENGINE_MAY_IMPORT))
    ]
    assert not bad, bad


def test_engine_loads_no_service_layer() -> None:
    """Importing every engine module pulls none of them in indirectly either."""
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _sources("tasks/engine")
    )
    loaded = _modules_after(f"import {', '.join(modules)}")
    bad = sorted(
        m
        for m in loaded
        if m.split(".")[0] in ENGINE_FORBIDDEN
        or (m.startswith("tasks.") and not m.startswith(("tasks.engine", "tasks.contract")))
    )
    assert not bad, bad


# what the gateway may import from behind the queue: the contract, the stores, the checks of
# what users bring, the Celery app and the reaper; never the worker, the engine or torch
GATEWAY_SIDE = ("contract", "store", "artifacts", "studies", "app.py", "settings.py", "reaper.py")
CONTRACT = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for room in GATEWAY_SIDE
    for p in ((ROOT / "tasks" / room).rglob("*.py") if "." not in room else [ROOT / "tasks" / room])
)


def test_the_contract_is_torch_free_and_knows_no_worker() -> None:
    """The rooms the gateway shares with the worker (the contract, the stores, the upload
    checks and URI rules, the Celery app, the reaper): importing all of them pulls in neither
    torch nor the worker nor the engine, so the gateway can import any of it."""
    assert "tasks.contract.spec" in CONTRACT and "tasks.app" in CONTRACT
    loaded = _modules_after(f"import {', '.join(CONTRACT)}")
    assert "torch" not in loaded
    assert not [m for m in loaded if m.startswith(("tasks.worker", "tasks.jobs", "tasks.engine"))]


def test_the_weights_only_guard_is_set_once_by_the_worker_package() -> None:
    """Only tasks/worker/__init__.py calls the guard; its modules import in plain order."""
    callers = [
        str(p.relative_to(ROOT))
        for p in _sources("tasks", "service")
        if "ensure_weights_only()" in p.read_text()
    ]
    assert sorted(callers) == ["tasks/worker/__init__.py", "tasks/worker/safe_torch.py"]
    noqa = [str(p.relative_to(ROOT)) for p in _sources("tasks") if "noqa: E402" in p.read_text()]
    assert not noqa, noqa
