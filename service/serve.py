"""`python -m service.serve`: the gateway's uvicorn processes, one listening socket each.

With N processes, each gets its own socket bound to the one address with SO_REUSEPORT, and
the kernel spreads new connections over the sockets. `uvicorn --workers N` shares one socket
instead: the process that is idle when connections arrive accepts all that wait, and
keep-alive clients stay where they landed. Measured with 20 keep-alive clients and two
processes (`make bench-service`): 18 connections on one process and 2 on the other, the
busy one's submits at p50 28 ms while the other's took 3 ms; with a socket each, the
connections split about evenly and the p99 fell by a third.

The supervision is what a deployment needs and no more: the sockets are bound here first
(a taken port fails at once, before any process starts), a process that dies is started
again on its socket, and SIGINT or SIGTERM stops them all (uvicorn's graceful shutdown: each
finishes the requests it holds) and waits. The supervisor gets SIGTERM when its own parent
exits (service.run_all, or make for `make gateway`), and each process when the supervisor
does, SIGKILL included (service.lifeline: the kernel's parent-death signal on Linux, a
getppid() poll elsewhere): no process is left holding the port. One process runs uvicorn in
place, as does any count where SO_REUSEPORT is missing (then with uvicorn's own `--workers`).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess

import uvicorn

from service.lifeline import die_with_parent
from service.run_all import Stop, raise_stop

APP = "service.main:app"
STOP_GRACE_S = 30.0
# A process that exits with an error this soon after its start (the app fails to import,
# Redis settings are invalid) would only fail again: the gateway stops instead. One killed by
# a signal (the OOM killer, SIGKILL) is started again whenever it dies.
CRASH_LOOP_S = 10.0
log = logging.getLogger("sharpness.serve")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port that other processes may bind too (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_on(sock: socket.socket, log_level: str, supervisor: int) -> None:
    """One gateway process: uvicorn on the socket it was handed (run in the child), stopping
    itself (gracefully: SIGTERM) if the supervisor dies: a killed supervisor must not leave
    processes that hold the port, and a new one would share it with them (SO_REUSEPORT)."""
    die_with_parent(signal.SIGTERM, parent=supervisor)
    config = uvicorn.Config(APP, log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])


def supervise(host: str, port: int, processes: int, log_level: str) -> int:
    try:
        sockets = [listening_socket(host, port) for _ in range(processes)]
    except OSError as e:
        print(
            f"gateway: cannot listen on {host}:{port}: {e.strerror}; stop what holds the port "
            "or choose another (SHARPNESS_HOST / SHARPNESS_PORT)",
            file=sys.stderr,
            flush=True,
        )
        return 2
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing shared but the fd

    started: dict[int, float] = {}

    def start(sock: socket.socket) -> BaseProcess:
        child = spawn.Process(target=serve_on, args=(sock, log_level, os.getpid()), name="gateway")
        child.start()
        started[id(child)] = time.monotonic()
        return child

    children: list[BaseProcess] = []
    code = 0
    signal.signal(signal.SIGINT, raise_stop)
    signal.signal(signal.SIGTERM, raise_stop)
    die_with_parent()
    try:
        children = [start(sock) for sock in sockets]
        print(
            f"gateway on {host}:{port}: {processes} processes (pids "
            f"{', '.join(str(c.pid) for c in children)}), a socket each (SO_REUSEPORT)",
            flush=True,
        )
        while True:
            for i, child in enumerate(children):
                if child.is_alive():
                    continue
                early = time.monotonic() - started[id(child)] < CRASH_LOOP_S
                if early and (child.exitcode or 0) > 0:
                    log.error(
                        "gateway process %s exited at start (%s); stopping",
                        child.pid,
                        child.exitcode,
                    )
                    code = 1
                    raise Stop("a process exited at start")
                log.error(
                    "gateway process %s exited (%s); starting it again", child.pid, child.exitcode
                )
                children[i] = start(sockets[i])
            time.sleep(0.5)
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: uvicorn drains and exits
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join()
        for sock in sockets:
            sock.close()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    if args.processes > 1 and hasattr(socket, "SO_REUSEPORT"):
        return supervise(args.host, args.port, args.processes, args.log_level)
    die_with_parent()  # uvicorn in place: its own SIGTERM handling stops it
    uvicorn.run(
        APP,
        host=args.host,
        port=args.port,
        workers=args.processes if args.processes > 1 else None,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
