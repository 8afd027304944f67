"""λmax of a fine-tuning-sized causal language model through the whole service, and the
worker's peak memory while it computes.

A Llama-shaped `transformers.LlamaForCausalLM` (float32, random weights, seed 0, untied
embeddings; hidden 768, 12 layers, vocabulary 17,000: 111,065,856 parameters by default) is
written with `save_pretrained`, uploaded as that folder through the SDK, and measured on 8
sequences of 64 random tokens (next-token labels) with the service's defaults, as a user would.
The service runs as `make run` runs it (`python -m service.run_all`: a private Redis, the
gateway, one worker) in a temporary data directory; while the job runs, the resident memory
(VmRSS) of every process of the worker's tree is sampled, and the report gives the peak of
their sum (what the worker needs: its supervisor and the child that computes) and of the
child alone, with the result's value, verdict, products and `diagnostics.bytes_per_parameter`.

Run: `python -m bench.large_lm [--hidden 768 --layers 12 --vocab 17000]
[--memory-budget-gib G]`; writes bench/results/large_lm.md (also when the job fails), and
the estimate at each step, with the seconds since submission, to bench/results/large_lm.trace.
`--soft-time-limit-s S` starts the service with that job time limit
(SHARPNESS_SOFT_TIME_LIMIT_S, the hard limit 300 s above it), as an operator serving such
models would. On the 2-core machine this takes tens of minutes (each product is a forward, a
backward and a double backward of a 111M model; a basis held small by the budget needs many
more products than the default one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench
from bench.procfs import cmdline, descendants, rss
from sharpness_client._progress import Progress
from tests.processes import wait_answering

GiB = 2**30
ROOT = Path(__file__).resolve().parent.parent


class Sampler(threading.Thread):
    """Samples the worker tree's resident memory every 50 ms until stopped."""

    def __init__(self, supervisor: int) -> None:
        super().__init__(daemon=True)
        self.supervisor = supervisor
        self.peak_sum = self.peak_one = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            roots = [p for p in descendants([self.supervisor]) if "tasks.worker" in cmdline(p)]
            pids = descendants(roots)
            sizes = [rss(p) for p in pids]
            if sizes:
                self.peak_sum = max(self.peak_sum, sum(sizes))
                self.peak_one = max(self.peak_one, max(sizes))
            time.sleep(0.05)


class Trace(Progress):
    """The job's progress, one line per change, each with the seconds since submission."""

    def __init__(self, path: Path, start: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(stream=path.open("w"), use_tqdm=False)
        self.start = start

    def _line(self, text: str) -> None:
        super()._line(f"{time.perf_counter() - self.start:7.0f} s {text}")

    def close(self) -> None:
        super().close()
        self.stream.close()


def build(folder: Path, hidden: int, layers: int, vocab: int) -> tuple[int, Path]:
    import numpy as np

    from bench.llama import llama

    model = llama(hidden, layers, vocab)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder / "model", safe_serialization=True)
    del model
    ids = np.random.default_rng(1).integers(0, vocab, size=(8, 65))
    data = folder / "tokens.npz"
    np.savez(data, input_ids=ids[:, :-1], labels=ids[:, 1:])
    return params, data


def _basis(diag: dict) -> str:
    """Where the basis was held, and its peak size there."""
    if diag.get("basis_spilled"):
        return f"file, {diag.get('basis_file_bytes_peak', 0) / GiB:.2f} GiB"
    return f"memory, {diag.get('basis_bytes_peak', 0) / GiB:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=17_000)
    parser.add_argument("--memory-budget-gib", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--soft-time-limit-s", type=int, default=None)
    args = parser.parse_args()

    from sharpness_client import Client

    with tempfile.TemporaryDirectory(prefix="sharpness-large-lm-") as tmp:
        work = Path(tmp)
        params, data = build(work, args.hidden, args.layers, args.vocab)
        env = dict(os.environ, SHARPNESS_DATA_DIR=str(work / "data"))
        env.pop("SHARPNESS_REDIS_URL", None)
        if args.soft_time_limit_s:
            env["SHARPNESS_SOFT_TIME_LIMIT_S"] = str(args.soft_time_limit_s)
            env["SHARPNESS_HARD_TIME_LIMIT_S"] = str(args.soft_time_limit_s + 300)
        stack = subprocess.Popen(
            [sys.executable, "-m", "service.run_all"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "service.log").open("w"),
        )
        try:
            url_file = work / "data" / "gateway.url"
            while not url_file.exists():
                if stack.poll() is not None:
                    raise SystemExit("the service did not start")
                time.sleep(0.5)
            url = url_file.read_text().strip()
            wait_answering(url, [stack], lambda: (work / "service.log").read_text())
            client = Client(url)
            model = client.models.upload(work / "model")
            sampler = Sampler(stack.pid)
            sampler.start()
            params_ = {}
            if args.memory_budget_gib is not None:
                params_ = {"lambda_max": {"memory_budget_bytes": int(args.memory_budget_gib * GiB)}}
            start = time.perf_counter()
            trace = Trace(bench.RESULTS / "large_lm.trace", start)
            try:
                job = client.measure(
                    model.id,
                    str(data),
                    ["lambda_max"],
                    params=params_,
                    timeout=args.timeout,
                    progress=trace,
                )
            except Exception as e:  # the job's problem is the finding: report it
                job, failure = None, f"{type(e).__name__}: {e}"
            seconds = time.perf_counter() - start
            sampler.done.set()
            sampler.join()
        finally:
            stack.terminate()
            stack.wait(60)
    if job is None:
        bench.report(
            "large_lm",
            [
                "# λmax of a causal language model through the service: FAILED",
                "",
                f"{params:,} parameters; after {seconds:.0f} s: {failure}",
                "",
                f"Worker peak RSS {sampler.peak_sum / GiB:.2f} GiB (all its processes), "
                f"computing process {sampler.peak_one / GiB:.2f} GiB; the estimate per step "
                "is in bench/results/large_lm.trace.",
            ],
        )
        return
    r = job.results["lambda_max"]
    diag = r.diagnostics or {}
    verdict = "converged" if r.converged else "NOT converged"
    lines = [
        "# λmax of a causal language model through the service",
        "",
        f"`python -m bench.large_lm --hidden {args.hidden} --layers {args.layers} --vocab "
        f"{args.vocab}"
        + (f" --memory-budget-gib {args.memory_budget_gib}" if args.memory_budget_gib else "")
        + (f" --soft-time-limit-s {args.soft_time_limit_s}" if args.soft_time_limit_s else "")
        + "`; LlamaForCausalLM, float32, 8 sequences of 64 tokens, the service's defaults.",
        "",
        "| parameters | λmax | verdict | HVPs | seconds (submit to result) | worker peak RSS "
        "(all its processes) | computing process peak RSS | peak / parameter | "
        "diagnostics.bytes_per_parameter | basis |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {params:,} | {r.value:.6g} | {verdict} ({diag.get('limited_by')}) | {r.hvps} | "
        f"{seconds:.0f} | {sampler.peak_sum / GiB:.2f} GiB | {sampler.peak_one / GiB:.2f} GiB | "
        f"{sampler.peak_one / params:.1f} | {diag.get('bytes_per_parameter')} | "
        f"{_basis(diag)} |",
        "",
        "Its error figures: "
        + ", ".join(
            f"{key} {diag[key]:.3g}"
            for key in ("error_estimate", "residual_bound", "rounding_level")
            if isinstance(diag.get(key), int | float)
        )
        + f"; {diag.get('iterations')} steps.",
        "",
        f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.",
    ]
    bench.report("large_lm", lines)


if __name__ == "__main__":
    main()
