"""Processes that stop when the process that started them goes, whatever signal ended it.

`make run` starts the supervisor (service.run_all), which starts Redis, the worker and the
gateway in process groups of their own (so a terminal's Ctrl-C reaches only the supervisor,
which stops them in order). A signal sent to one pid (make's, a process manager's) or a
SIGKILL of the supervisor would otherwise leave them running. Three pieces:

- `die_with_parent()`: the calling process gets SIGTERM when its parent exits. On Linux it is
  the kernel's parent-death signal (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread polls
  getppid(). The supervisors (service.run_all, service.serve) call it for themselves: when
  make goes, their own SIGTERM handling stops everything in order.
- `preexec_die_with_parent()`: the same for a child, armed in the child between fork and exec
  (subprocess' preexec_fn), so the worker and the gateway get SIGTERM the moment the
  supervisor is gone, SIGKILL included.
- The guardian (`python -m service.lifeline`): a small process that survives the supervisor,
  holding the read end of a pipe whose write end only the supervisor holds. End of file
  without the word "done" means the supervisor died: it then stops the processes it was
  given, in order (SIGTERM, wait, SIGKILL; a child armed with its own parent-death signal is
  only waited for), so Redis outlives the worker's warm shutdown.
  This is the portable part: it needs no prctl.

The kernel sends the parent-death signal when the *thread* that started the process exits:
a multi-threaded program that starts a supervisor must do so from a thread that lives as long
as it wants the supervisor to. Torch-free, standard library only.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
POLL_S = 0.5
DONE = b"done\n"


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _set_pdeathsig(sig: int) -> bool:
    if _PRCTL is None:
        return False
    return _PRCTL(PR_SET_PDEATHSIG, ctypes.c_ulong(int(sig)), 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> str:
    """Have `sig` sent to this process when its parent (`parent`, default the current one)
    exits. A process whose parent is already init (pid 1: a container's entrypoint, a
    daemon) has nothing to watch. Returns how it is done ("prctl", "polling", "none")."""
    expected = os.getppid() if parent is None else parent
    if expected <= 1:
        return "none"
    if _set_pdeathsig(sig):
        if os.getppid() != expected:  # it died before the signal was armed
            os.kill(os.getpid(), sig)
        return "prctl"

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(POLL_S)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    return "polling"


def preexec_die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A subprocess preexec_fn arming the parent-death signal in the child (Linux), or None
    where there is no prctl (the guardian then stops the child). Only async-signal-safe work
    happens in the child: a prctl call and a getppid check."""
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL
    number = ctypes.c_ulong(int(sig))

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and here
            os._exit(1)

    return arm


# ------------------------------------------------------------------------------- guardian
class Guardian:
    """The supervisor's side of the guardian: start it before anything else, `add()` each
    process as it starts, and `release()` at the end of an orderly stop (it then exits doing
    nothing)."""

    def __init__(self) -> None:
        read_fd, self._write_fd = os.pipe()  # not inherited by other children (O_CLOEXEC)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.lifeline", "--supervisor", str(os.getpid())],
                stdin=read_fd,
                start_new_session=True,  # a terminal's Ctrl-C is the supervisor's to handle
            )
        finally:
            os.close(read_fd)

    def add(self, name: str, pid: int, grace_s: float, rank: int, armed: bool = False) -> None:
        """A process to stop if the supervisor dies: lower ranks first, SIGTERM then SIGKILL
        after `grace_s` seconds. `armed`: it gets its own parent-death SIGTERM (started with
        `preexec_die_with_parent()`), so it is only waited for (a second SIGTERM could cut
        its warm shutdown short), and killed after `grace_s`."""
        flag = "armed" if armed else "plain"
        self._send(f"stop {rank}:{name}:{pid}:{grace_s:g}:{flag}\n".encode())

    def _send(self, data: bytes) -> None:
        if self._write_fd < 0:
            return
        try:
            os.write(self._write_fd, data)
        except OSError:  # the guardian is gone: the supervisor notices it exited
            pass

    def release(self) -> None:
        """Orderly end: the guardian exits without touching anything."""
        if self._write_fd < 0:
            return
        self._send(DONE)
        os.close(self._write_fd)
        self._write_fd = -1
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start_time(pid: int) -> str | None:
    """The process' start time (Linux /proc), to tell it from a later process with its pid;
    None where it is gone, a zombie, or /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _alive(pid: int, started: str | None) -> bool:
    if Path("/proc/self/stat").exists():
        return started is not None and _start_time(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(name: str, pid: int, grace_s: float, armed: bool, started: str | None) -> None:
    if not _alive(pid, started):
        return
    if armed:
        print(f"lifeline: the supervisor is gone; waiting for {name} (pid {pid})", flush=True)
    else:
        print(f"lifeline: the supervisor is gone; stopping {name} (pid {pid})", flush=True)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid, started):
            return
        time.sleep(0.1)
    print(f"lifeline: {name} did not stop in {grace_s:g} s; killing it", flush=True)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def guard(supervisor: int) -> int:
    """Read targets from stdin, the supervisor's pipe, until it closes; unless the supervisor
    said "done", stop every target, lowest rank first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    targets: list[tuple[int, str, int, float, bool]] = []
    started: dict[int, str | None] = {}
    buffer = b""
    while chunk := os.read(0, 4096):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line == DONE.strip():
                return 0
            if line.startswith(b"stop "):
                rank, name, pid, grace_s, flag = line[5:].decode().split(":")
                targets.append((int(rank), name, int(pid), float(grace_s), flag == "armed"))
                started[int(pid)] = _start_time(int(pid))
    for _, name, pid, grace_s, armed in sorted(targets, key=lambda t: t[0]):
        _stop(name, pid, grace_s, armed, started.get(pid))
    if targets:
        print(f"lifeline: everything supervisor {supervisor} started is stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stop processes when a supervisor dies.")
    parser.add_argument("--supervisor", type=int, required=True)
    return guard(parser.parse_args(argv).supervisor)


if __name__ == "__main__":
    sys.exit(main())
