"""The study statistics are a library: importing every module of tasks/studies pulls in no web
framework, no Redis, no Celery, no torch and nothing of the gateway, so a notebook or a batch
job can run an analysis on plain data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("fastapi", "starlette", "redis", "celery", "kombu", "torch", "service", "pydantic")


def test_the_study_statistics_import_no_gateway_and_no_torch() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "tasks" / "studies").glob("*.py")
        if p.name != "members.py"  # reads job records: the contract's pydantic models
    )
    assert "tasks.studies.analysis" in modules
    code = f"import {', '.join(modules)}, sys; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in FORBIDDEN]
