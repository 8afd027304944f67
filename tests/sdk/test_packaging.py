"""The SDK stays light: httpx and pydantic (and argcomplete, pure Python, for the CLI's shell
completion) only, torch and numpy never imported up front."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "clients" / "python" / "pyproject.toml"


def test_required_dependencies_are_httpx_pydantic_and_argcomplete_only() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    names = {d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]}
    assert names == {"httpx", "pydantic", "argcomplete"}
    assert "torch" in project["optional-dependencies"]
    assert project["scripts"]["sharpness"] == "sharpness_client.cli:main"


def test_importing_the_sdk_and_cli_loads_no_torch_or_numpy() -> None:
    code = "import sharpness_client, sharpness_client.cli, sys; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "torch" not in loaded and "numpy" not in loaded
    assert "argcomplete" not in loaded  # only when the shell asks for completions
