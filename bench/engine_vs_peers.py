"""The engine against its peers, side by side, on the same models and data.

Peers: PyHessian (power iteration, Hutchinson), curvlinops (HessianLinearOperator + scipy
eigsh(tol=0), Hutch++ / XTrace), hessian-eigenthings (Lanczos, Hutch++). Install them with
`make bench` (no dependencies pulled: they would drag in another torch).

For each model it reports:
- λmax: the relative error against a dense float64 Hessian, the HVPs and the seconds each tool
  used, with its defaults and with settings tightened to reach 1e-6;
- one HVP's time over one gradient's time on the same fixed batch;
- the trace's relative error at 100 HVPs (median and mean over 40 seeds: with 20 the
  ranking of estimators this close flips with the draw).

Run: `python -m bench.engine_vs_peers [--quick]`. Writes bench/results/engine_vs_peers.md.
Figures are printed, never asserted: speed is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure

TORCH_THREADS = 2


# ------------------------------------------------------------------ models and data
def digits(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:n] / 16.0, dtype=torch.float32)
    return x, torch.tensor(y[:n], dtype=torch.long)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 16, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@dataclass
class Case:
    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def dense_hessian(case: Case) -> torch.Tensor:
    """The exact Hessian in float64 (the reference every tool is judged by).

    Reverse-over-reverse in chunks of 64 rows: torch.func.hessian would materialise every
    tangent at once (gigabytes for a few thousand parameters and 1000 examples).
    """
    model64 = _copy64(case.model)
    names = [n for n, _ in model64.named_parameters()]
    shapes = [p.shape for p in model64.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model64.parameters()])
    x64 = case.x.double()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            n = shape.numel()
            params[name] = flat[offset : offset + n].view(shape)
            offset += n
        out = torch.func.functional_call(model64, params, (x64,))
        return nn.functional.cross_entropy(out, case.y)

    H = torch.func.jacrev(torch.func.jacrev(loss), chunk_size=64)(flat0)
    return 0.5 * (H + H.T)


def _copy64(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


# ------------------------------------------------------------------ measurement helpers
class Counter:
    """Counts calls of a wrapped matrix-vector product."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@dataclass
class EigRow:
    tool: str
    setting: str
    value: float
    rel_error: float
    hvps: int
    seconds: float


def _timed(fn: Callable[[], tuple[float, int]]) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    value, hvps = fn()
    return value, hvps, time.perf_counter() - t0


def ours_lambda_max(case: Case, tol: float) -> tuple[float, int]:
    problem = HessianProblem(case.model, [(case.x, case.y)], loss="cross_entropy")
    result = run_measure(problem, "lambda_max", {"tol": tol, "max_iter": 500})
    return float(result["value"]), int(result["hvps"])


def curvlinops_lambda_max(case: Case) -> tuple[float, int]:
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    op = HessianLinearOperator(
        case.model, nn.CrossEntropyLoss(), case.params, [(case.x, case.y)]
    ).to_scipy()
    counter = Counter(op.matvec)
    from scipy.sparse.linalg import LinearOperator

    wrapped = LinearOperator(op.shape, matvec=counter, dtype=op.dtype)
    vals = eigsh(wrapped, k=1, which="LA", tol=0, return_eigenvectors=False)
    return float(vals[0]), counter.calls


def pyhessian_lambda_max(case: Case, tol: float) -> tuple[float, int]:
    import importlib

    # the package re-exports the class under the submodule's name: fetch the module itself
    ph = importlib.import_module("pyhessian.hessian")

    counter = Counter(ph.hessian_vector_product)
    ph.hessian_vector_product = counter
    try:
        torch.manual_seed(0)
        comp = ph.hessian(case.model, nn.CrossEntropyLoss(), data=(case.x, case.y), cuda=False)
        with contextlib.redirect_stdout(io.StringIO()):
            vals, _ = comp.eigenvalues(maxIter=1000, tol=tol, top_n=1)
    finally:
        ph.hessian_vector_product = counter.fn
    return float(vals[0]), counter.calls


def eigenthings_lambda_max(case: Case, max_iter: int | None, tol: float) -> tuple[float, int]:
    import hessian_eigenthings as he

    op = he.HessianOperator(
        case.model, [(case.x, case.y)], he.supervised_loss(nn.functional.cross_entropy)
    )
    counter = Counter(op.matvec)
    op.matvec = counter  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = he.lanczos(op, k=1, max_iter=max_iter, tol=tol, which="LA", seed=0)
    return float(res.eigenvalues[0]), counter.calls


def lambda_max_rows(case: Case, exact: float) -> list[EigRow]:
    runs: list[tuple[str, str, Callable[[], tuple[float, int]]]] = [
        ("sharpness (ours)", "tol=1e-6 (default)", lambda: ours_lambda_max(case, 1e-6)),
        ("sharpness (ours)", "tol=1e-4", lambda: ours_lambda_max(case, 1e-4)),
        ("curvlinops + eigsh", "tol=0", lambda: curvlinops_lambda_max(case)),
        ("PyHessian", "tol=1e-3 (default)", lambda: pyhessian_lambda_max(case, 1e-3)),
        ("PyHessian", "tol=1e-7", lambda: pyhessian_lambda_max(case, 1e-7)),
        ("hessian-eigenthings", "defaults", lambda: eigenthings_lambda_max(case, None, 1e-4)),
        ("hessian-eigenthings", "max_iter=100", lambda: eigenthings_lambda_max(case, 100, 1e-8)),
    ]
    rows = []
    for tool, setting, fn in runs:
        log(f"  {tool} {setting}")
        try:
            value, hvps, seconds = _timed(fn)
        except Exception as exc:  # a peer that cannot run this case is reported, not fatal
            log(f"    failed: {type(exc).__name__}: {exc}")
            rows.append(
                EigRow(tool, f"{setting} (failed: {type(exc).__name__})", *[math.nan] * 2, 0, 0.0)
            )
            continue
        rows.append(EigRow(tool, setting, value, abs(value - exact) / abs(exact), hvps, seconds))
    return rows


def hvp_over_gradient(case: Case, repeats: int = 20) -> dict[str, float]:
    """Seconds of one HVP over seconds of one gradient, on the same fixed batch."""
    params = case.params

    def gradient() -> None:
        torch.autograd.grad(nn.functional.cross_entropy(case.model(case.x), case.y), params)

    def best(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    t_grad = best(gradient)
    problem = HessianProblem(case.model, [(case.x, case.y)], loss="cross_entropy")
    ours = HessianOperator(problem)
    v = torch.randn(problem.dim, dtype=torch.float64)
    out = {"sharpness (ours)": best(lambda: ours.matvec(v)) / t_grad}

    from curvlinops import HessianLinearOperator

    cl = HessianLinearOperator(case.model, nn.CrossEntropyLoss(), params, [(case.x, case.y)])
    vf = v.float()
    out["curvlinops"] = best(lambda: cl @ vf) / t_grad

    import hessian_eigenthings as he

    he_op = he.HessianOperator(
        case.model, [(case.x, case.y)], he.supervised_loss(nn.functional.cross_entropy)
    )
    out["hessian-eigenthings"] = best(lambda: he_op.matvec(vf)) / t_grad

    import importlib

    # the package re-exports the class under the submodule's name: fetch the module itself
    ph = importlib.import_module("pyhessian.hessian")

    comp = ph.hessian(case.model, nn.CrossEntropyLoss(), data=(case.x, case.y), cuda=False)
    vs = [torch.randn_like(p) for p in comp.params]
    out["PyHessian (cached graph)"] = (
        best(lambda: ph.hessian_vector_product(comp.gradsH, comp.params, vs)) / t_grad
    )
    return out


def trace_errors(case: Case, exact: float, seeds: int) -> dict[str, tuple[float, float]]:
    """Median and mean relative trace error at a budget of 100 HVPs."""
    errors: dict[str, list[float]] = {}

    def add(tool: str, value: float) -> None:
        errors.setdefault(tool, []).append(abs(value - exact) / abs(exact))

    problem = HessianProblem(case.model, [(case.x, case.y)], loss="cross_entropy")
    from curvlinops import HessianLinearOperator
    from curvlinops.trace.epperly2024xtrace import xtrace
    from curvlinops.trace.hutchinson import hutchinson_trace
    from curvlinops.trace.meyer2020hutch import hutchpp_trace

    cl = HessianLinearOperator(case.model, nn.CrossEntropyLoss(), case.params, [(case.x, case.y)])
    import hessian_eigenthings as he

    he_op = he.HessianOperator(
        case.model, [(case.x, case.y)], he.supervised_loss(nn.functional.cross_entropy)
    )
    for seed in range(seeds):
        for method in ("hutchinson", "hutch++", "xtrace"):
            r = run_measure(problem, "trace", {"method": method, "num_hvps": 100, "seed": seed})
            add(f"sharpness (ours) {method}", float(r["value"]))
        torch.manual_seed(seed)
        add("curvlinops hutchinson", float(hutchinson_trace(cl, 100)))
        torch.manual_seed(seed)
        add("curvlinops hutch++", float(hutchpp_trace(cl, 99)))
        torch.manual_seed(seed)
        add("curvlinops xtrace", float(xtrace(cl, 100)))
        add("hessian-eigenthings hutch++", he.trace(he_op, num_matvecs=99, seed=seed).estimate)
    return {tool: (statistics.median(v), statistics.mean(v)) for tool, v in errors.items()}


# ------------------------------------------------------------------------- report
def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer seeds and repeats")
    args = parser.parse_args()
    torch.set_num_threads(TORCH_THREADS)
    seeds = 5 if args.quick else 40

    x, y = digits(1000)
    cases = [
        Case("MLP 64-32-10 tanh, digits[:1000]", train(mlp(), x, y), x, y),
        Case("CNN + BatchNorm, digits[:1000]", train(SmallCNN(), x, y, steps=150), x, y),
    ]
    lines = [
        "# Engine vs peers",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32 models; "
        "reference: dense float64 Hessian.",
        "",
    ]
    for case in cases:
        log(f"{case.name}: dense Hessian")
        H = dense_hessian(case)
        eig = torch.linalg.eigvalsh(H)
        exact_max, exact_trace = float(eig[-1]), float(torch.trace(H))
        lines += [
            f"## {case.name} ({H.shape[0]} parameters)",
            "",
            f"Dense: λmax = {exact_max:.9g}, λ2/λ1 = {float(eig[-2] / eig[-1]):.4f}, "
            f"trace = {exact_trace:.6g}",
            "",
            "| tool | model dtype | setting | λmax | rel. error | HVPs | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        log("λmax")
        case64 = Case(case.name, _copy64(case.model), case.x.double(), case.y)
        for precision, c in (("float32", case), ("float64", case64)):
            for r in lambda_max_rows(c, exact_max):
                lines.append(
                    f"| {r.tool} | {precision} | {r.setting} | {r.value:.9g} | {r.rel_error:.1e} "
                    f"| {r.hvps} | {r.seconds:.3f} |"
                )
        lines += ["", "| tool | HVP time / gradient time |", "|---|---|"]
        log("HVP / gradient")
        for tool, ratio in hvp_over_gradient(case).items():
            lines.append(f"| {tool} | {ratio:.2f} |")
        lines += ["", f"| tool | trace rel. error at 100 HVPs, {seeds} seeds: median | mean |"]
        lines.append("|---|---|---|")
        log("trace")
        errors = trace_errors(case, exact_trace, seeds)
        for tool, (median, mean) in sorted(errors.items(), key=lambda t: t[1][1]):
            lines.append(f"| {tool} | {median:.2e} | {mean:.2e} |")
        lines.append("")
    report = "\n".join(lines)
    print(report)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "engine_vs_peers.md").write_text(report)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
