"""The README's quickstart, run as written against a real service.

The shell blocks of README.md's "Quickstart" section are extracted and run one after another
with bash, in an empty folder holding only links to the repository's `.venv` and to each file
of `examples/` (as a newcomer runs them from the repository's folder; the examples write to
the folder's own `examples/out/`, which the repository's .gitignore names). The only change
is the service's address: the README reads it from `SHARPNESS_URL`, which is set to the test
service's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Stack

pytestmark = pytest.mark.integration

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def shell_blocks(title: str) -> list[str]:
    text = section((ROOT / "README.md").read_text(), title)
    return [body for lang, body in FENCE.findall(text) if lang in ("sh", "bash", "shell")]


def test_example_outputs_are_git_ignored() -> None:
    """What the quickstart and the examples write (examples/out/) never shows as a change."""
    for path in ("examples/out/model.pt2", "examples/out/hf_models/cls.npz"):
        proc = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True, check=False
        )
        assert proc.returncode == 0, f"{path} is not git-ignored"
    assert "examples/out/" in section((ROOT / "README.md").read_text(), "Quickstart")


def test_readme_starts_with_make_run_and_make_test() -> None:
    first = shell_blocks("Start")[0].splitlines()
    assert first[0].startswith("make run") and first[1].startswith("make test"), first
    assert ".venv/bin/" in section((ROOT / "README.md").read_text(), "Start")


@pytest.mark.skipif(shutil.which("jq") is None, reason="the README's curl lines use jq")
def test_quickstart_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    blocks = shell_blocks("Quickstart")
    assert len(blocks) == 4, "data, curl, CLI, SDK"
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "examples").mkdir()
    for entry in (ROOT / "examples").iterdir():
        if entry.name != "out":
            (tmp_path / "examples" / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    env["SHARPNESS_URL"] = stack.url

    def run(block: str) -> str:
        proc = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, f"{block}\n--- out\n{proc.stdout}\n--- err\n{proc.stderr}"
        return proc.stdout

    data, curl, cli, sdk = blocks
    out = run(data)
    out_dir = tmp_path / "examples" / "out"  # git-ignored, nothing in the working folder
    assert (out_dir / "model.pt2").stat().st_size > 0
    assert (out_dir / "digits.npz").stat().st_size > 0
    assert not (tmp_path / "model.pt2").exists()
    assert "train accuracy" in out

    result = json.loads(run(curl))
    assert result["status"] == "succeeded", result
    lam, trace = result["lambda_max"], result["trace"]
    assert lam > 0 and trace > lam  # the trace sums eigenvalues; λmax is one of them
    lo, hi = result["ci95"]
    assert lo <= trace <= hi

    out = run(cli)
    row = next(line for line in out.splitlines() if line.lstrip().startswith("lambda_max"))
    # the same model and data: the CLI's λmax agrees with the curl job's to its tolerance
    assert abs(float(row.split()[1]) - lam) <= 1e-4 * lam, out

    words = run(sdk).split()
    assert words[0] == "succeeded", words
    assert abs(float(words[1]) - lam) <= 1e-4 * lam
