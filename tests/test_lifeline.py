"""service.lifeline with small real processes: a child armed with the parent-death signal (by
prctl, or by the getppid() poll used where prctl is missing) stops when its parent is killed,
and the guardian stops its targets when its supervisor dies, and only then. Only processes
started here are signalled, by their pid; waits are for states, not fixed times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service import lifeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _wait(predicate, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@contextmanager
def _python(code: str) -> Iterator[subprocess.Popen]:
    """`python -c code` from the repository root with its stdout piped; killed at the end
    when it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_parent(parent: subprocess.Popen, child_pid: int, what: str) -> None:
    """SIGKILL the parent, then wait for its child to go (`what` names the failure)."""
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    _wait(lambda: _gone(child_pid), what)


@pytest.mark.parametrize("how", ["prctl", "polling"])
def test_child_stops_when_its_parent_is_killed(tmp_path: Path, how: str) -> None:
    """parent (killed with SIGKILL) -> child armed by die_with_parent(): the child goes."""
    pid_file = tmp_path / "child.pid"
    child = textwrap.dedent(f"""
        import os, sys, time
        from service import lifeline
        if {how == "polling"!r}:
            lifeline._PRCTL = None
        lifeline.POLL_S = 0.05
        print(lifeline.die_with_parent(), flush=True)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
    """)
    with _python(
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    ) as parent:
        assert parent.stdout.readline().decode().strip() == how
        _wait(lambda: pid_file.exists() and pid_file.read_text(), "the child did not start")
        _kill_parent(parent, int(pid_file.read_text()), "the child outlived its parent")


def test_preexec_arms_the_child(tmp_path: Path) -> None:
    """A subprocess started with preexec_die_with_parent() goes when its parent is killed."""
    code = textwrap.dedent("""
        import subprocess, sys
        from service.lifeline import preexec_die_with_parent
        child = subprocess.Popen(["sleep", "120"], preexec_fn=preexec_die_with_parent())
        print(child.pid, flush=True)
        child.wait()
    """)
    with _python(code) as parent:
        child_pid = int(parent.stdout.readline())
        _kill_parent(parent, child_pid, "the armed child outlived its parent")


def test_no_parent_to_watch() -> None:
    assert lifeline.die_with_parent(parent=1) == "none"


def _guarded(release: bool) -> tuple[list[subprocess.Popen], str]:
    """A supervisor process with a guardian and two `sleep` targets; it releases the guardian
    and exits (release) or is SIGKILLed. Returns the sleeps and the supervisor's output."""
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        from service.lifeline import Guardian
        g = Guardian()
        a = subprocess.Popen(["sleep", "120"], start_new_session=True)
        b = subprocess.Popen(["sleep", "120"], start_new_session=True)
        g.add("second", b.pid, 5, rank=1)
        g.add("first", a.pid, 5, rank=0)
        print(a.pid, b.pid, flush=True)
        if {release!r}:
            g.release()
            print("released", flush=True)
        time.sleep(120)
    """)
    sup = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert sup.stdout is not None
    pids = [int(p) for p in sup.stdout.readline().split()]
    if release:
        assert sup.stdout.readline().strip() == b"released"
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    return pids, sup  # type: ignore[return-value]


def test_guardian_stops_targets_in_order_when_the_supervisor_dies() -> None:
    pids, sup = _guarded(release=False)
    try:
        _wait(lambda: all(_gone(p) for p in pids), "a target outlived the supervisor")
        out = sup.stdout.read().decode()  # the guardian shares its stdout; it ends with it
        assert out.index("stopping first") < out.index("stopping second"), out
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_released_guardian_touches_nothing() -> None:
    pids, _ = _guarded(release=True)
    try:
        # release() returned once the guardian had exited: nothing is left to stop them
        assert not any(_gone(p) for p in pids)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
