"""The gateway never imports torch, and importing it connects to nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_service_main_loads_no_torch() -> None:
    env = {**os.environ, "SHARPNESS_REDIS_URL": "redis://127.0.0.1:9/0"}  # nothing listens
    code = (
        "import service.main, service.openapi_export, sys; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
