"""The gateway's processes (`service.serve`, what `make gateway` and `make run` start): a
listening socket per process, keep-alive connections spread over them, a process that dies
started again, SIGTERM stopping all, a taken port refused at once. Real uvicorn processes;
sockets are read from /proc (Linux)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks.store.local_redis import free_port
from tests.processes import spawn_gateway, stop_group, wait_answering

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

LISTEN, ESTABLISHED = "0A", "01"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _gateway_pids(supervisor: int) -> list[int]:
    """The uvicorn processes: the supervisor's children that hold a socket on the port (not
    multiprocessing's resource tracker)."""
    return [c for c in _children(supervisor) if _socket_inodes(c)]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _tcp(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 sockets whose local port is `port` and whose state is `state`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def _start(tmp_path: Path, port: int, processes: int) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "gateway.log"
    env = {
        **os.environ,
        # nothing here touches Redis (/healthz answers without it); a port nobody serves
        "SHARPNESS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SHARPNESS_DATA_DIR": str(tmp_path / "var"),
    }
    return spawn_gateway(env, processes, log, port)[0], log


def _wait_listening(proc: subprocess.Popen, port: int, n: int, timeout_s: float = 120) -> None:
    """Until `n` gateway processes each hold a listening socket on `port`: the first one
    answering says nothing of the others, which a busy machine starts later."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = _gateway_pids(proc.pid)
        listening = _tcp(port, LISTEN)
        if len(pids) == n and all(_socket_inodes(p) & listening for p in pids):
            return
        time.sleep(0.2)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port = free_port()
    proc, log = _start(tmp_path, port, 2)
    try:
        wait_answering(f"http://127.0.0.1:{port}", [proc], log.read_text)
        _wait_listening(proc, port, 2)
        yield proc, port, log
    finally:
        stop_group(proc)


def _keep_alive(port: int, n: int) -> list[socket.socket]:
    """`n` connections, each having had one answered request (so each is accepted)."""
    conns = []
    for _ in range(n):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        conns.append(conn)
    return conns


def test_each_process_listens_and_connections_spread(two) -> None:
    proc, port, _ = two
    pids = _gateway_pids(proc.pid)
    assert len(pids) == 2
    listening = _tcp(port, LISTEN)
    # a listening socket per process, not one shared: each process holds one of its own
    assert len(listening) == 2
    assert all(len(_socket_inodes(p) & listening) == 1 for p in pids)
    assert not _socket_inodes(pids[0]) & _socket_inodes(pids[1]) & listening
    # 40 keep-alive connections opened in a burst: the kernel hashes them over the sockets
    # (each process below 8 of 40 has odds of about 1e-4 with an even hash; one shared
    # socket leaves most of them on whichever process accepted first)
    conns = _keep_alive(port, 40)
    try:
        established = _tcp(port, ESTABLISHED)
        held = [len(_socket_inodes(p) & established) for p in pids]
        assert sum(held) == 40
        assert min(held) >= 8, held
    finally:
        for conn in conns:
            conn.close()


def test_a_process_that_dies_is_started_again(two) -> None:
    proc, port, _ = two
    victim = _gateway_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = _gateway_pids(proc.pid)
        if len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.2)
    assert len(pids) == 2 and victim not in pids
    for _ in range(20):  # every connection is answered, whichever socket it hashes to
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    assert proc.poll() is None


def test_sigterm_stops_every_process(two) -> None:
    proc, port, _ = two
    pids = _gateway_pids(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)  # the supervisor alone, as a process manager sends it
    assert proc.wait(timeout=40) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_processes_stop_when_their_supervisor_is_killed(two) -> None:
    proc, port, _ = two
    pids = _gateway_pids(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to stop them itself
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{p}").exists() for p in pids):
        assert time.monotonic() < deadline, "an orphaned gateway process kept running"
        time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_taken_port_is_refused_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, log = _start(tmp_path, port, 2)
        assert proc.wait(timeout=30) != 0
    assert "Address already in use" in log.read_text()
