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


ROOT = PYPROJECT.parents[2]


def test_the_sdk_version_is_written_once() -> None:
    """sharpness_client/_version.py holds it; the build reads it from there and the package,
    the User-Agent and `sharpness --version` import it, so no other file spells it."""
    project = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "sharpness_client._version.__version__"
    code = "import sharpness_client, sharpness_client._version as v; print(v.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version = out.stdout.strip()
    spelled = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "clients" / "python" / "sharpness_client").rglob("*.py")
        if f'"{version}"' in p.read_text()
    ]
    assert spelled == ["clients/python/sharpness_client/_version.py"]


def test_the_service_version_is_its_package_version() -> None:
    """pyproject.toml holds the service's version; the API's OpenAPI document reads it from
    the installed package's metadata instead of a copy."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    code = "from service.main import create_app; print(create_app().version)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip().splitlines()[-1] == version
    spelled = [
        str(p.relative_to(ROOT))
        for top in ("service", "tasks")
        for p in (ROOT / top).rglob("*.py")
        if f'"{version}"' in p.read_text()
    ]
    assert not spelled, spelled
