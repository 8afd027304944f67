"""Where one HVP's time goes: the engine's product against PyHessian's and against the bare
`autograd.grad` through the engine's own kept graph, each over one gradient of the same batch.

The models and data are bench/engine_vs_peers.py's (an MLP and a CNN with BatchNorm on the
first 1000 digits). All tools run round-robin, once each per round, and each ratio is the
median over rounds of (product time / that round's gradient time), so load drifting on a shared
machine hits every tool alike. The gap between the engine and the bare call is the engine's
own overhead (casting and splitting v, flattening and widening the product to float64).

`--against REV` also loads tasks/engine/operator.py as it was at git revision REV beside the
current one (same process, same graph-building code) and checks that both give bit-identical
products: a before/after of a change to the operator.

Run: `python -m bench.hvp_cost [--rounds N] [--against REV]`. Needs PyHessian (`make bench`
installs it). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bench.engine_vs_peers import SmallCNN, digits, mlp, train
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem

ROOT = Path(__file__).resolve().parent.parent


def operator_at(rev: str):
    """The HessianOperator class of tasks/engine/operator.py at git revision `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:tasks/engine/operator.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "operator_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("operator_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HessianOperator


def ratios(model: nn.Module, x, y, rounds: int, against: str | None) -> dict[str, float]:
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient() -> None:
        torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)

    problem = HessianProblem(model, [(x, y)], loss="cross_entropy")
    ours = HessianOperator(problem, backend="cached")
    v = torch.randn(problem.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours.matvec(v)  # builds the kept graph
    graph = ours._grads[0]  # noqa: SLF001 - the bare call runs on the engine's own graph
    pieces = [t.float() for t in problem.unflatten(v)]
    ph = importlib.import_module("pyhessian.hessian")
    comp = ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    tools: dict[str, Callable[[], object]] = {}
    if against:
        before = operator_at(against)(problem, backend="cached")
        if not torch.equal(before.matvec(v), ours.matvec(v)):
            print(f"[hvp_cost] products differ from {against}'s", file=sys.stderr)
        tools[f"engine at {against}"] = lambda: before.matvec(v)
    tools["engine"] = lambda: ours.matvec(v)
    tools["PyHessian (cached graph)"] = lambda: ph.hessian_vector_product(
        comp.gradsH, comp.params, pieces
    )
    tools["bare autograd.grad, engine's graph"] = lambda: torch.autograd.grad(
        graph, problem.params, grad_outputs=pieces, retain_graph=True
    )
    for fn in (gradient, *tools.values()):
        fn()
    samples: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(rounds):
        t0 = time.perf_counter()
        gradient()
        t_grad = time.perf_counter() - t0
        for name, fn in tools.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) / t_grad)
    return {name: statistics.median(r) for name, r in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--against", default=None, help="a git revision of the operator")
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, y = digits(1000)
    cases = {
        "MLP 64-32-10 tanh": train(mlp(), x, y),
        "CNN + BatchNorm": train(SmallCNN(), x, y, steps=150),
    }
    print("| model | tool | HVP time / gradient time |\n|---|---|---|")
    for name, model in cases.items():
        for tool, ratio in ratios(model, x, y, args.rounds, args.against).items():
            print(f"| {name} | {tool} | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
