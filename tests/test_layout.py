"""Architecture rules that keep the layers apart."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_registry_and_spec_import_no_torch() -> None:
    mods = _modules_after(
        "import tasks.spec, tasks.engine.registry as r, tasks.jobstore; r.measures()"
    )
    assert "torch" not in mods


def test_registry_lists_required_measures() -> None:
    from tasks.engine import registry

    required = {
        "lambda_max",
        "top_eigenvalues",
        "trace",
        "frobenius",
        "spectral_density",
        "adaptive_sharpness",
    }
    assert required <= set(registry.measures())
