"""Nothing outlives `make run`, whichever single pid is signalled: SIGTERM or SIGKILL to make's
pid (make forwards nothing, and Redis, the worker and the gateway sit in process groups of
their own), or SIGKILL to the supervisor's. Real processes: a real GNU make (a waiting Python
parent where make is missing) running `python -m service.run_all` on a free port with its own
Redis; the process tree is read from /proc (Linux). Only processes started here are signalled,
by their pid; the test waits for states, never a fixed time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.store.local_redis import free_port
from tests.integration.conftest import ROOT, Stack
from tests.integration.test_run_all import launch, start, submit_running_trace, wait_ready
from tests.processes import wait_answering

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

# the processes of a started stack, by a word of their command line
PARTS = ("service.run_all", "redis-server", "tasks.worker", "service.serve", "service.lifeline")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(top: int) -> dict[int, str]:
    """Every live process below `top`: pid -> start time (to tell it from a later process
    that is given the same pid)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [top]
    while todo:
        for child in parents.get(todo.pop(), []):
            fields = _stat(child)
            if fields is not None and fields[0] != "Z":
                found[child] = fields[19]
                todo.append(child)
    return found


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _whole_tree(top: int, timeout_s: float = 120) -> dict[int, str]:
    """The tree once every part of the stack runs (the gateway's processes included)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tree = _descendants(top)
        commands = [_cmdline(pid) for pid in tree]
        serving = sum("multiprocessing.spawn" in c for c in commands)
        if all(any(part in c for c in commands) for part in PARTS[1:]) and serving >= 2:
            return tree
        assert time.monotonic() < deadline, commands
        time.sleep(0.2)


def _wait_gone(tree: dict[int, str], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while left := {pid: _cmdline(pid) for pid, t in tree.items() if _alive(pid, t)}:
        assert time.monotonic() < deadline, f"still running: {left}\n{log.read_text()}"
        time.sleep(0.2)


def _start(tmp_path: Path, via_make: bool) -> tuple[subprocess.Popen, Path, int]:
    """`make run` as a user starts it (a Makefile whose recipe is the supervisor), or the
    supervisor itself; its output goes to a log."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    env.update(
        SHARPNESS_DATA_DIR=str(data_dir),
        PYTHONPATH=str(ROOT),
        SHARPNESS_PORT=str(port),
        SHARPNESS_HEARTBEAT_S="1",
        SHARPNESS_WORKER_QUEUES="cpu",
        SHARPNESS_GATEWAY_WORKERS="2",
        PYTHONUNBUFFERED="1",
    )
    supervisor = [sys.executable, "-m", "service.run_all"]
    make = shutil.which("make")
    if not via_make:
        args = supervisor
    elif make:
        (tmp_path / "Makefile").write_text(f"run:\n\t{' '.join(supervisor)}\n")
        args = [make, "-s", "run"]
    else:  # a parent that waits for its child and forwards nothing, as make does
        args = [sys.executable, "-c", f"import subprocess; subprocess.run({supervisor!r})"]
    log = data_dir / "run_all.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=out)
    return proc, log, port


def _run(tmp_path: Path, via_make: bool, sig: signal.Signals) -> tuple[Path, dict[int, str]]:
    """Start the stack, wait until it answers and every part runs, send `sig` to the top pid
    only, and wait until every process below it is gone."""
    proc, log, port = _start(tmp_path, via_make)
    try:
        wait_answering(f"http://127.0.0.1:{port}", [proc], log.read_text, "/readyz")
        tree = _whole_tree(proc.pid)
        if via_make:
            names = [_cmdline(pid) for pid in tree]
            assert sum("service.run_all" in c for c in names) == 1, names
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
        _wait_gone(tree, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log, tree


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signal_to_makes_pid_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    """make dies without passing the signal on; the supervisor sees its parent go and stops
    everything in order, as after Ctrl-C."""
    log, tree = _run(tmp_path, via_make=True, sig=sig)
    text = log.read_text()
    assert text.index("stopping worker") < text.index("stopping gateway"), text
    assert text.index("stopping gateway") < text.index("stopping redis"), text
    assert "lifeline: the supervisor is gone" not in text, text  # the orderly stop did it
    assert len(tree) >= 7  # supervisor, lifeline, redis, worker (+ pool), gateway (+ 2)


def test_sighup_to_the_supervisor_stops_everything_in_order(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP) is a Ctrl-C: the orderly stop."""
    log, _ = _run(tmp_path, via_make=False, sig=signal.SIGHUP)
    text = log.read_text()
    assert (
        text.index("stopping worker")
        < text.index("stopping gateway")
        < text.index("stopping redis")
    ), text


def test_sigkill_of_the_supervisor_stops_everything(tmp_path: Path) -> None:
    """The supervisor can do nothing: the worker and the gateway get their parent-death
    SIGTERM, and the guardian stops Redis once they are gone."""
    log, tree = _run(tmp_path, via_make=False, sig=signal.SIGKILL)
    text = log.read_text()
    assert "lifeline: the supervisor is gone; stopping redis" in text, text
    assert text.count("worker: Warm shutdown") == 1, text  # its own SIGTERM, and only that
    assert "lifeline: everything supervisor" in text, text


def test_a_job_running_when_the_supervisor_is_killed_runs_again(tmp_path: Path) -> None:
    """Redis outlives the worker's warm shutdown after a SIGKILL of the supervisor: the running
    job goes back to the queue and finishes after a restart on the same data directory."""
    data_dir, port, proc, log = launch(tmp_path)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        tree = _descendants(proc.pid)
        api = Stack(redis_url="", data_dir=data_dir, env={}, port=port)
        job_id = submit_running_trace(api, tmp_path)
        tree |= _descendants(proc.pid)  # the worker's pool child that runs it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_gone(tree, log)
        assert "lifeline: the supervisor is gone; stopping redis" in log.read_text()

        proc = start(data_dir, port)
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        job = api.wait(job_id, timeout_s=180)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2, job
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
