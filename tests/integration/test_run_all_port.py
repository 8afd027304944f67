"""`make run` (service.run_all) refuses a port in use before starting anything, naming the
port and how to choose another, instead of reporting another program's answers as ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from service.run_all import port_problem
from tests.integration.conftest import ROOT


def run_all(tmp_path: Path, port: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    env.update(SHARPNESS_PORT=port, SHARPNESS_DATA_DIR=str(tmp_path / "var"), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "service.run_all"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = run_all(tmp_path, str(port))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert f"SHARPNESS_PORT={port + 1} make run" in proc.stderr
    assert "ready" not in proc.stdout and "redis" not in proc.stdout  # nothing was started
    assert not (tmp_path / "var").exists()


def test_port_checks() -> None:
    assert "not a port number" in (port_problem("127.0.0.1", "80a") or "")
    assert "not a port number" in (port_problem("127.0.0.1", "70000") or "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert port_problem("127.0.0.1", str(free)) is None  # closed again: free
