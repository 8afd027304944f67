"""Check deploy/ against a live stack: a private Redis, a uvicorn gateway, one CPU worker and a
real Prometheus loading deploy/prometheus/alerts.yml and scraping the gateway every second.

    python deploy/check_stack.py    # `prometheus` on PATH (Debian: apt-get install prometheus)

It submits a few tiny jobs (and one `device: cuda` job nobody consumes), then asks Prometheus
for every query of the Grafana dashboard (Grafana's variables filled in) and prints what each
returns; every rule must load healthy. Finally it SIGKILLs the worker and waits for
SharpnessWorkerDown to fire (about 70 s: the heartbeat expires, then `for: 1m`). Exits 1 when a
query fails or returns nothing, a rule is unhealthy, or the alert does not fire.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.store.local_redis import PrivateRedis, free_port  # noqa: E402
from tests.api import files  # noqa: E402
from tests.test_deploy_rules import dashboard_queries, grafana_to_promql  # noqa: E402


def wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    if shutil.which("prometheus") is None:
        print("prometheus is not on PATH")
        return 2
    work = Path(tempfile.mkdtemp(prefix="sharpness-stack-"))
    procs: list[subprocess.Popen] = []

    def spawn(args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(work / log, "wb") as out:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out)
        procs.append(proc)
        return proc

    redis_server = PrivateRedis(work / "redis", aof=False).start()
    failures: list[str] = []
    try:
        port, prom_port = free_port(), free_port()
        env = {
            **os.environ,
            "SHARPNESS_REDIS_URL": redis_server.url,
            "SHARPNESS_DATA_DIR": str(work / "data"),
            "SHARPNESS_HEARTBEAT_S": "1",
            "SHARPNESS_WORKER_QUEUES": "cpu",
        }
        spawn(
            [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)],
            "gw.log",
            env,
        )
        worker = spawn([sys.executable, "-m", "tasks.worker"], "worker.log", env)
        gw = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{gw}/readyz").status_code == 200, 180, "the worker")

        config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ROOT / "deploy/prometheus/alerts.yml")]
        config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = f"http://127.0.0.1:{prom_port}"
        spawn(
            [
                "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            "prometheus.log",
        )

        model = httpx.post(f"{gw}/v1/models", files={"file": ("m.pt2", files.pt2_bytes(work))})
        data = httpx.post(f"{gw}/v1/datasets", files={"file": ("d.npz", files.npz_bytes())})
        spec = {
            "model": model.json()["id"],
            "dataset": {"id": data.json()["id"]},
            "measures": [{"name": "lambda_max"}],
        }
        cuda = httpx.post(f"{gw}/v1/jobs", json={**spec, "device": "cuda"})
        print("cuda submit:", cuda.status_code, cuda.headers.get("warning"))
        ids: list[str] = []
        for _ in range(8):  # a few jobs over some seconds, so rate() sees them end
            ids.append(httpx.post(f"{gw}/v1/jobs", json={**spec, "device": "cpu"}).json()["id"])
            time.sleep(2)
        wait_for(
            lambda: all(
                httpx.get(f"{gw}/v1/jobs/{i}").json()["status"] == "succeeded" for i in ids
            ),
            120,
            "the jobs",
        )
        time.sleep(15)
        print("readyz:", httpx.get(f"{gw}/readyz").json()["checks"])

        for expr in dashboard_queries():
            query = grafana_to_promql(expr).replace("[5m]", "[1m]")
            answer = httpx.get(f"{prom}/api/v1/query", params={"query": query}).json()
            result = answer.get("data", {}).get("result", [])
            hidden = ("__name__", "instance", "job")
            shown = [
                ({k: v for k, v in s["metric"].items() if k not in hidden}, s["value"][1])
                for s in result[:4]
            ]
            print(f"{answer['status']:8} {len(result):2} {query[:100]}  {shown}")
            if answer["status"] != "success" or not result:
                failures.append(f"query: {query}")
        rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"][0]["rules"]
        for rule in rules:
            print(f"rule {rule['name']}: {rule['health']} {rule['state']}")
            if rule["health"] != "ok":
                failures.append(f"rule {rule['name']}: {rule.get('lastError')}")

        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        firing: set[str] = set()
        while time.monotonic() - killed < 180 and "SharpnessWorkerDown" not in firing:
            alerts = httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
            firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
            time.sleep(2)
        print(f"{time.monotonic() - killed:.0f} s after SIGKILL, firing: {sorted(firing)}")
        if "SharpnessWorkerDown" not in firing:
            failures.append("SharpnessWorkerDown did not fire")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        redis_server.stop()
    print("FAILED:\n  " + "\n  ".join(failures) if failures else "OK")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
