"""The engine against its peers, side by side, on the same models and data.

Peers: PyHessian (power iteration, Hutchinson), curvlinops (HessianLinearOperator + scipy
eigsh(tol=0), Hutch++ / XTrace), hessian-eigenthings (Lanczos, Hutch++). Install them with
`make bench` (no dependencies pulled: they would drag in another torch).

For each model it reports:
- λmax: the relative error against a dense float64 Hessian, the HVPs and the seconds (fastest
  of three runs) each tool used, with its defaults and with settings tightened to reach 1e-6;
- one HVP's time over one gradient's time on the same fixed batch (round-robin, median);
- the trace's relative error at 100 products (median, and mean ± its standard error, over 400
  seeds), each tool's estimator applied to the exact Hessian (see `trace_errors`).

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

import numpy as np
import torch
from torch import nn

import bench
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


def _timed(fn: Callable[[], tuple[float, int]], runs: int = 3) -> tuple[float, int, float]:
    """The value and HVPs of a run (the same every time) and its fastest of `runs` seconds:
    the first call of any tool also pays one-time start-up costs, and the load drifts."""
    seconds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        value, hvps = fn()
        seconds.append(time.perf_counter() - t0)
    return value, hvps, min(seconds)


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


def hvp_over_gradient(case: Case, rounds: int = 60) -> dict[str, float]:
    """Seconds of one HVP over seconds of one gradient, on the same fixed batch.

    The gradient and every tool's HVP run round-robin, once each per round, and the median
    over rounds of (HVP time / gradient time of that round) is reported: on a shared machine
    the load drifts, and timing each tool in its own stretch lets the drift pick the winner.
    """
    params = case.params

    def gradient() -> None:
        torch.autograd.grad(nn.functional.cross_entropy(case.model(case.x), case.y), params)

    problem = HessianProblem(case.model, [(case.x, case.y)], loss="cross_entropy")
    ours = HessianOperator(problem)
    v = torch.randn(problem.dim, dtype=torch.float64)
    vf = v.float()

    from curvlinops import HessianLinearOperator

    cl = HessianLinearOperator(case.model, nn.CrossEntropyLoss(), params, [(case.x, case.y)])

    import hessian_eigenthings as he

    he_op = he.HessianOperator(
        case.model, [(case.x, case.y)], he.supervised_loss(nn.functional.cross_entropy)
    )

    import importlib

    # the package re-exports the class under the submodule's name: fetch the module itself
    ph = importlib.import_module("pyhessian.hessian")

    comp = ph.hessian(case.model, nn.CrossEntropyLoss(), data=(case.x, case.y), cuda=False)
    vs = [torch.randn_like(p) for p in comp.params]
    tools: dict[str, Callable[[], object]] = {
        "sharpness (ours)": lambda: ours.matvec(v),
        "curvlinops": lambda: cl @ vf,
        "hessian-eigenthings": lambda: he_op.matvec(vf),
        "PyHessian (cached graph)": lambda: ph.hessian_vector_product(comp.gradsH, comp.params, vs),
    }
    for fn in (gradient, *tools.values()):  # warm up: first calls build graphs and caches
        fn()
    ratios: dict[str, list[float]] = {tool: [] for tool in tools}
    for _ in range(rounds):
        t0 = time.perf_counter()
        gradient()
        t_grad = time.perf_counter() - t0
        for tool, fn in tools.items():
            t0 = time.perf_counter()
            fn()
            ratios[tool].append((time.perf_counter() - t0) / t_grad)
    return {tool: statistics.median(r) for tool, r in ratios.items()}


def trace_errors(H: torch.Tensor, seeds: int) -> dict[str, list[float]]:
    """Relative trace errors at a budget of 100 products, one per seed and estimator.

    Every estimator is applied to the exact float64 Hessian as a dense matrix: the estimators
    differ only in how they spend their 100 products, float32 rounding of the HVPs is taken
    out for every tool alike, and hundreds of seeds cost seconds (the gaps between the best
    estimators are a few tens of percent, which 40 seeds cannot resolve).
    """
    import hessian_eigenthings as he
    from curvlinops.trace.epperly2024xtrace import xtrace
    from curvlinops.trace.hutchinson import hutchinson_trace
    from curvlinops.trace.meyer2020hutch import hutchpp_trace

    from tasks.engine.linear_operator import MatrixOperator
    from tasks.engine.trace import block_krylov, hutchinson, hutchpp
    from tasks.engine.trace import xtrace as our_xtrace

    exact = float(torch.trace(H))
    ours = MatrixOperator(H)
    he_op = he.LambdaOperator(lambda v: H @ v, H.shape[0], dtype=H.dtype)
    estimators: dict[str, Callable[[int], float]] = {
        "sharpness (ours) krylov": lambda s: block_krylov(ours, 100, seed=s).estimate,
        "sharpness (ours) xtrace": lambda s: our_xtrace(ours, 100, seed=s).estimate,
        "sharpness (ours) hutch++": lambda s: hutchpp(ours, 100, seed=s).estimate,
        "sharpness (ours) hutchinson": lambda s: hutchinson(ours, 100, seed=s).estimate,
        "curvlinops xtrace": lambda s: float(xtrace(H, 100)),
        "curvlinops hutch++": lambda s: float(hutchpp_trace(H, 99)),
        "curvlinops hutchinson": lambda s: float(hutchinson_trace(H, 100)),
        "hessian-eigenthings hutch++": lambda s: he.trace(he_op, num_matvecs=99, seed=s).estimate,
    }
    errors: dict[str, list[float]] = {tool: [] for tool in estimators}
    for seed in range(seeds):
        for tool, estimate in estimators.items():
            torch.manual_seed(seed)  # curvlinops draws from the global generator
            errors[tool].append(abs(estimate(seed) - exact) / abs(exact))
    return errors


# ------------------------------------------------------------------------- report
def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer seeds and repeats")
    args = parser.parse_args()
    torch.set_num_threads(TORCH_THREADS)
    seeds = 40 if args.quick else 400

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
        lines += [
            "",
            f"| tool | trace rel. error at 100 products, {seeds} seeds: median | mean ± s.e. |",
            "|---|---|---|",
        ]
        log("trace")
        errors = trace_errors(H, seeds)
        for tool, errs in sorted(errors.items(), key=lambda t: statistics.mean(t[1])):
            mean, se = statistics.mean(errs), statistics.stdev(errs) / math.sqrt(len(errs))
            lines.append(f"| {tool} | {statistics.median(errs):.2e} | {mean:.2e} ± {se:.1e} |")
        lines.append("")
    bench.report("engine_vs_peers", lines)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
