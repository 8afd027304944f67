"""Train a small MLP on scikit-learn's digits, then ask the running service how sharp it is.

    make run                      # in one terminal: Redis, a worker and the gateway
    .venv/bin/python examples/digits.py [--url URL]   # default $SHARPNESS_URL, else :8000

The model (examples/digits_mlp.py) is exported with torch.export (dynamic batch dimension, eval
mode), the data saved as an .npz holding `inputs` and `targets`; both are uploaded, one job
asks for λmax, the trace and adaptive sharpness, and the script polls it and prints the
results.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import numpy as np
from digits_mlp import accuracy, export, load, train

API_KEY = os.environ.get("SHARPNESS_API_KEY")


def upload(client: httpx.Client, kind: str, path: Path) -> str:
    with path.open("rb") as fh:
        resp = client.post(f"/v1/{kind}", files={"file": (path.name, fh)})
    resp.raise_for_status()
    return resp.json()["id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("SHARPNESS_URL") or "http://127.0.0.1:8000",
        help="the service (default: $SHARPNESS_URL, else http://127.0.0.1:8000)",
    )
    args = parser.parse_args()
    try:
        httpx.get(f"{args.url}/healthz", timeout=5)
    except httpx.TransportError as e:
        print(
            f"could not reach the service at {args.url} ({e}); start it with `make run`, "
            "or give its address with --url or SHARPNESS_URL",
            file=sys.stderr,
        )
        return 4

    x, y = load()
    model = train(x, y)
    print(f"trained: train accuracy {accuracy(model, x, y):.3f} on {len(x)} digits")

    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    with TemporaryDirectory() as tmp, httpx.Client(base_url=args.url, headers=headers) as api:
        model_path, data_path = Path(tmp) / "digits_mlp.pt2", Path(tmp) / "digits.npz"
        export(model, model_path)
        buf = io.BytesIO()
        np.savez(buf, inputs=x.numpy(), targets=y.numpy())
        data_path.write_bytes(buf.getvalue())
        model_id = upload(api, "models", model_path)
        data_id = upload(api, "datasets", data_path)
        spec = {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 512},
            "loss": "cross_entropy",
            "measures": [
                {"name": "lambda_max", "params": {"tol": 1e-6}},
                {"name": "trace", "params": {"num_hvps": 150}},
                {"name": "adaptive_sharpness", "params": {"rho": 0.002, "iterations": 10}},
            ],
            "labels": {"example": "digits"},
        }
        resp = api.post("/v1/jobs", json=spec)
        resp.raise_for_status()
        job_id = resp.json()["id"]
        print(f"job {job_id} submitted ({resp.headers['location']})")
        while True:
            job = api.get(f"/v1/jobs/{job_id}").json()
            running = {k: p["iteration"] for k, p in job["progress"].items() if p["iteration"]}
            print(f"  {job['status']:<9} {running}", end="\r", flush=True)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        print()
    if job["status"] != "succeeded":
        print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
        return 1
    ev = job["evaluation"]
    print(f"loss {ev['loss']:.4f}, accuracy {ev['accuracy']:.3f} on {ev['num_examples']} examples")
    for name, res in job["results"].items():
        extra = f"converged={res['converged']}" if res.get("converged") is not None else ""
        print(
            f"{name:>20}: {res['value']:.6g}  ({res['hvps']} HVPs, {res['seconds']:.1f} s) {extra}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
