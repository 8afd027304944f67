"""One real service and one folder for every documentation snippet that needs them.

The stack is tests/integration's (a real gateway and a real Celery worker on the session's
private Redis), on a database of its own; the folder holds what a reader has after the README's
quickstart: `examples/out/model.pt2` and `examples/out/digits.npz` made by
examples/quickstart_data.py, a link to the repository's `.venv` and one to each file of its
`examples/` (so that what the examples write lands in this folder's `examples/out/`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.store.local_redis import PrivateRedis
from tests import databases
from tests.integration.conftest import ROOT, Stack, start_stack


@pytest.fixture(scope="session")
def docs_stack(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # time limits well above a snippet's run on a busy machine: a snippet shows a finished job
    limits = {"soft_time_limit_s": 600, "hard_time_limit_s": 660, "visibility_timeout_s": 700}
    s = start_stack(redis_server, databases.DOCS, tmp_path_factory.mktemp("docs-service"), **limits)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs-folder")
    (folder / ".venv").symlink_to(ROOT / ".venv")
    (folder / "examples").mkdir()
    for entry in (ROOT / "examples").iterdir():
        if entry.name != "out":
            (folder / "examples" / entry.name).symlink_to(entry)
    proc = subprocess.run(
        [sys.executable, "examples/quickstart_data.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


def reader_env(stack: Stack | None) -> dict[str, str]:
    """The environment a reader has: no test settings, `.venv/bin` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if stack is not None:
        env["SHARPNESS_URL"] = stack.url
    return env
