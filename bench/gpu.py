"""The GPU path measured: ResNet-18 on 1,000 CIFAR-sized images, the engine against curvlinops
on the same card.

The model is ResNet-18 in its CIFAR form (3×3 stem, no max-pool, basic blocks 2-2-2-2 of 64 to
512 channels, BatchNorm; 11.2M parameters), defined here (no torchvision, no downloads), with
random weights trained a few SGD steps on random 3×32×32 images whose labels come from a random
linear teacher, then measured in eval mode, float32, in batches of `--batch`.

Rows, each timed from nothing built to the answer (the engine builds its problem and its
cached graph inside the measure, curvlinops its operator), with the device synchronised, and
the peak memory the row allocated on the card (torch.cuda.max_memory_allocated, reset before):

- λmax: the engine's `lambda_max` (tol 1e-6, the service's default) with its automatic HVP
  backend and with the `func` backend (torch.func forward-over-reverse); curvlinops'
  HessianLinearOperator through scipy's eigsh(k=1, tol=1e-6), the same relative tolerance;
- top-5: the engine's `top_eigenvalues` (k=5) against eigsh(k=5, tol=1e-6);
- trace: the engine's `trace` (block Krylov, 100 HVPs) against curvlinops' XTrace at 100
  products (its best estimator at that budget in bench/engine_vs_peers.py).

There is no exact answer at 11M parameters: agreement between the tools is reported instead
(λ relative to curvlinops'). The engine has no compiled (torch.compile) backend; `func` is
its torch.func path.

Run: `python -m bench.gpu` (CUDA; prints "no CUDA device" and exits 0 without one). `--device
cpu --quick` runs the same code on a narrow ResNet-18 and 64 images on the CPU, to check the
code path, not to measure. Writes bench/results/gpu.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import bench


# ------------------------------------------------------------------------ ResNet-18
class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32×32 inputs (He et al. 2016, CIFAR variant); `width` 64 is the standard
    one (11,173,962 parameters for 10 classes)."""

    def __init__(self, classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        layers, c_in = [], w
        for i, c_out in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * w, classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def make_case(
    images: int, width: int, batch: int, steps: int, device: torch.device
) -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    """ResNet-18 trained `steps` SGD steps on random images labelled by a random linear
    teacher; eval mode; the data as batches on `device`."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(images, 3, 32, 32, generator=g)
    teacher = torch.randn(3 * 32 * 32, 10, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    model = ResNet18(width=width).to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        i = (step * batch) % images
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + batch]), y[i : i + batch]).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, [(x[i : i + batch], y[i : i + batch]) for i in range(0, images, batch)]


# ------------------------------------------------------------------------ measuring
@dataclass
class Row:
    quantity: str
    tool: str
    values: list[float]
    hvps: int | None
    seconds: float
    peak_bytes: int | None
    note: str = ""


def measured(device: torch.device, fn: Callable[[], tuple[list[float], int | None, str]]):
    """Run fn with the card synchronised around it; its seconds and peak allocated bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    values, hvps, note = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return values, hvps, seconds, peak, note


def engine(model, batches, device, measure: str, params: dict, backend: str = "auto"):
    from tasks.engine.problem import HessianProblem
    from tasks.engine.runner import run_measure

    def fn():
        problem = HessianProblem(model, batches, loss="cross_entropy", device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = run_measure(problem, measure, params, hvp_backend=backend)
        d = res["diagnostics"]
        value = res["value"]
        values = [float(v) for v in value] if isinstance(value, list) else [float(value)]
        note = f"backend {d.get('backend', backend)}"
        if "restarts" in d:
            note += f", {d['restarts']} restarts"
        if not res.get("converged", True):
            note += ", not converged"
        return values, int(res["hvps"]), note

    return fn


class Counted:
    def __init__(self, fn: Callable) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, X):
        self.calls += 1 if X.ndim == 1 else X.shape[1]
        return self.fn(X)


def curvlinops_operator(model, batches):
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    # the determinism probe costs extra passes over the data; the data here is fixed
    return HessianLinearOperator(
        model, nn.CrossEntropyLoss(), params, batches, check_deterministic=False
    )


def curvlinops_eigsh(model, batches, k: int, tol: float):
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    def fn():
        op = curvlinops_operator(model, batches).to_scipy(np.float64)
        counter = Counted(op.matvec)
        wrapped = LinearOperator(op.shape, matvec=counter, dtype=op.dtype)
        vals = eigsh(wrapped, k=k, which="LA", tol=tol, return_eigenvectors=False)
        return sorted((float(v) for v in vals), reverse=True), counter.calls, "scipy eigsh"

    return fn


def curvlinops_xtrace(model, batches, num_matvecs: int):
    from curvlinops.trace.epperly2024xtrace import xtrace

    def fn():
        op = curvlinops_operator(model, batches)
        torch.manual_seed(0)
        return [float(xtrace(op, num_matvecs))], num_matvecs, "XTrace"

    return fn


# ------------------------------------------------------------------------- report
def log(message: str) -> None:
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def fmt_values(values: list[float]) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a code-path check: ResNet-18 of width 4, 32 images, tol 1e-3, 20-product traces",
    )
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="examples per batch")
    parser.add_argument("--width", type=int, default=None, help="64: the standard ResNet-18")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--skip-peers", action="store_true", help="the engine only")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: bench/gpu.py measures the CUDA path only (--device cpu checks it)")
        return
    images = args.images or (32 if args.quick else 1000)
    width = args.width or (4 if args.quick else 64)
    batch = args.batch or (16 if args.quick else 250)
    lam_tol = 1e-3 if args.quick else 1e-6
    trace_hvps = 20 if args.quick else 100
    if device.type == "cpu":
        torch.set_num_threads(2)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, for both tools
    torch.backends.cudnn.allow_tf32 = False

    model, batches = make_case(images, width, batch, args.train_steps, device)
    dim = sum(p.numel() for p in model.parameters())
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log(f"ResNet-18 width {width}: {dim:,} parameters, {images} images, {card}")

    lam = {"tol": lam_tol}
    plan: list[tuple[str, str, Callable]] = [
        ("λmax", "sharpness", engine(model, batches, device, "lambda_max", lam)),
        (
            "λmax",
            "sharpness, func backend",
            engine(model, batches, device, "lambda_max", lam, backend="func"),
        ),
        ("λmax", "curvlinops + eigsh", curvlinops_eigsh(model, batches, 1, lam_tol)),
        ("top-5", "sharpness", engine(model, batches, device, "top_eigenvalues", {"k": 5, **lam})),
        ("top-5", "curvlinops + eigsh", curvlinops_eigsh(model, batches, 5, lam_tol)),
        (
            "trace",
            "sharpness (block Krylov)",
            engine(model, batches, device, "trace", {"num_hvps": trace_hvps}),
        ),
        ("trace", "curvlinops XTrace", curvlinops_xtrace(model, batches, trace_hvps)),
    ]
    rows: list[Row] = []
    for quantity, tool, fn in plan:
        if args.skip_peers and tool.startswith("curvlinops"):
            continue
        log(f"{quantity}: {tool}")
        try:
            values, hvps, seconds, peak, note = measured(device, fn)
        except Exception as exc:  # a row that cannot run is reported, not fatal
            log(f"  failed: {type(exc).__name__}: {exc}")
            rows.append(Row(quantity, tool, [], None, float("nan"), None, f"failed: {exc}"))
            continue
        log(f"  {fmt_values(values)} in {seconds:.2f} s, {hvps} HVPs")
        rows.append(Row(quantity, tool, values, hvps, seconds, peak, note))

    lines = [
        "# GPU: ResNet-18, engine against curvlinops",
        "",
        f"{card}, torch {torch.__version__}, float32 (TF32 off); ResNet-18 width {width} "
        f"({dim:,} parameters), {images} random 3×32×32 images in batches of {batch}, "
        f"{args.train_steps} SGD steps, eval mode; eigenvalue tol {lam_tol:g}, traces at "
        f"{trace_hvps} products. Seconds from nothing built to the answer; "
        "peak memory: torch.cuda.max_memory_allocated during the row.",
        "",
        "| quantity | tool | value(s) | HVPs | seconds | peak GPU memory | × curvlinops time "
        "| note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peers = {r.quantity: r for r in rows if r.tool.startswith("curvlinops") and r.values}
    for r in rows:
        peer = peers.get(r.quantity)
        ratio = f"{r.seconds / peer.seconds:.2f}" if peer and r.values else "—"
        mem = f"{r.peak_bytes / 2**30:.2f} GiB" if r.peak_bytes is not None else "—"
        note = r.note
        if peer and r.values and r is not peer and r.quantity != "trace":
            diff = abs(r.values[0] - peer.values[0]) / abs(peer.values[0])
            note += f"; λ1 differs from curvlinops' by {diff:.1e} (relative)"
        lines.append(
            f"| {r.quantity} | {r.tool} | {fmt_values(r.values)} | {r.hvps or '—'} "
            f"| {r.seconds:.2f} | {mem} | {ratio} | {note} |"
        )
    bench.report("gpu", lines)


if __name__ == "__main__":
    main()
