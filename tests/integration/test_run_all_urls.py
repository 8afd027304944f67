"""`make run` says where it listens: {data dir}/gateway.url and redis.url while it runs (gone
after it stops), docs/architecture.md's `celery inspect` command works as written against its
private Redis, and a CLI pointed at the wrong port names the URL `make run` wrote."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.store.local_redis import free_port
from tests.integration.conftest import ROOT
from tests.integration.test_run_all import launch, wait_ready

pytestmark = pytest.mark.integration

SCRIPT = shutil.which("sharpness", path=str(Path(sys.executable).parent)) or "sharpness"


def inspect_command() -> str:
    """The `celery ... inspect ping` line of docs/architecture.md, as written."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    [line] = [ln.strip() for ln in text.splitlines() if "inspect ping" in ln and "redis.url" in ln]
    return line


def test_url_files_celery_inspect_and_cli_hint(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    data_dir, port, proc, log = launch(tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        assert (data_dir / "gateway.url").read_text().strip() == url
        redis_url = (data_dir / "redis.url").read_text().strip()
        assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", redis_url)
        banner = log.read_text()
        assert str(data_dir / "redis.url") in banner or "var/redis.url" in banner, banner

        command = inspect_command()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SHARP")}
        ping = subprocess.run(
            ["bash", "-e", "-c", command],
            cwd=tmp_path,
            env={**clean, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ping.returncode == 0, f"{command}\n{ping.stdout}\n{ping.stderr}"
        assert "pong" in ping.stdout, ping.stdout

        wrong = f"http://127.0.0.1:{free_port()}"
        hint = subprocess.run(
            [SCRIPT, "--url", wrong, "queue"],
            cwd=tmp_path,
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert hint.returncode == 4
        assert f"listens on {url}" in hint.stderr and "gateway.url" in hint.stderr, hint.stderr
        right = subprocess.run(
            [SCRIPT, "--url", url, "queue"], env=clean, capture_output=True, text=True
        )
        assert right.returncode == 0 and f"sharpness: service {url} (from --url)" in right.stderr

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert not (data_dir / "gateway.url").exists() and not (data_dir / "redis.url").exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
