"""Data parallel in the engine: two gloo ranks on the CPU, each holding a shard of the data,
give the one-process answer (λmax, top-k, trace with the same seed, loss, gradient) to float64
rounding, and the dense Hessian's eigenvalues."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tasks.engine.batches import BatchSource
from tasks.engine.distributed import free_port, shard, shard_ranges
from tasks.engine.problem import Batch, HessianProblem
from tasks.engine.runner import run_measure
from tests.engine import models as M
from tests.engine.reference import dense_hessian

REL = 1e-10
MEASURES: dict[str, dict[str, Any]] = {
    "lambda_max": {"tol": 1e-10, "most_negative": True},
    "top_eigenvalues": {"k": 4, "tol": 1e-10},
    "trace": {"num_hvps": 40, "method": "hutchinson", "seed": 3},
    "frobenius": {"num_hvps": 20},
    "spectral_density": {"runs": 2, "steps": 12, "grid_points": 20},
}


def _case(name: str) -> tuple[torch.nn.Module, list[Batch], str]:
    """A float64 model with uneven batches and some targets that are not counted (-100)."""
    model, pairs, loss = M.make(name)
    whole = Batch(*pairs[0])
    targets = whole.targets.clone()
    targets[::7] = -100  # not counted: the weighting by counted targets matters
    whole = Batch(whole.inputs, targets)
    cuts = [0, 13, 20, 31, whole.size]  # four uneven batches
    return model, [whole.slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)], loss


def _one_batch(name: str) -> tuple[torch.nn.Module, list[Batch], str]:
    model, batches, loss = _case(name)
    return model, [Batch.concat(batches)], loss


CASES = {"batches": _case, "one_batch": _one_batch}


def _adam(p: HessianProblem) -> dict[str, torch.Tensor]:
    """An Adam state of uneven second moments for preconditioned_lambda_max."""
    g = torch.Generator().manual_seed(7)
    state = {
        f"exp_avg_sq.{n}": torch.rand(q.shape, generator=g, dtype=q.dtype) + 0.1
        for n, q in zip(p.names, p.params, strict=True)
    }
    return {**state, "step": torch.tensor([10.0])}


def _rank(rank: int, world: int, port: int, case: str, model_name: str, out: Any) -> None:
    """One rank: its shard, the measures, the loss and gradient; rank 0 sends them back."""
    from tasks.engine import distributed

    torch.set_num_threads(1)
    distributed.init_group(rank, world, "cpu", port, timeout_s=120)
    try:
        model, batches, loss = CASES[case](model_name)
        p = distributed.DistributedProblem(model, distributed.shard(batches, rank, world), loss)
        results = {name: run_measure(p, name, params) for name, params in MEASURES.items()}
        per_layer = run_measure(p, "lambda_max", {"per_layer": True, "tol": 1e-10})
        ggn = run_measure(p, "lambda_max", {"curvature": "ggn", "tol": 1e-10})
        adam = run_measure(p, "preconditioned_lambda_max", {"tol": 1e-10}, optimizer_state=_adam(p))
        ev, grad = p.evaluate(), p.gradient()
        if rank == 0:
            out.put(
                {
                    "results": results,
                    "per_layer": per_layer,
                    "ggn": ggn,
                    "adam": adam,
                    "evaluate": ev,
                    "gradient": grad.clone(),
                    "counts": (p.num_examples, p.num_targets, p.local_examples),
                }
            )
    finally:
        distributed.destroy()


def _run_ranks(world: int, case: str, model_name: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = mp.start_processes(
        _rank,
        args=(world, free_port(), case, model_name, out),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 300
    try:
        got = None
        while got is None:
            try:
                got = out.get(timeout=1)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs.processes):
                    raise AssertionError("a rank failed") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("the ranks did not answer") from None
        while not procs.join(timeout=30):
            pass
        return got
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.kill()
            p.join(5)


def _close(a: float, b: float, scale: float) -> None:
    assert abs(a - b) <= REL * scale, (a, b)


@pytest.mark.parametrize(
    ("case", "model_name"), [("batches", "mlp_tanh"), ("one_batch", "cnn_bn"), ("batches", "tied")]
)
def test_two_gloo_ranks_equal_one_process(case: str, model_name: str) -> None:
    model, batches, loss = CASES[case](model_name)
    p = HessianProblem(model, batches, loss)
    H = dense_hessian(p)
    evals = torch.linalg.eigvalsh(H).flip(0)
    scale = float(evals.abs().max())
    single = {name: run_measure(p, name, params) for name, params in MEASURES.items()}
    got = _run_ranks(2, case, model_name)
    par = got["results"]

    assert got["counts"][:2] == (p.num_examples, p.num_targets)
    assert 0 < got["counts"][2] < p.num_examples  # rank 0 held a part only
    for name in MEASURES:
        assert par[name]["diagnostics"]["world_size"] == 2
        assert single[name]["diagnostics"]["world_size"] == 1
        assert par[name]["hvps"] == single[name]["hvps"], name
    _close(par["lambda_max"]["value"], single["lambda_max"]["value"], scale)
    _close(par["lambda_max"]["value"], float(evals[0]), 1e3 * scale)  # and the dense answer
    _close(
        par["lambda_max"]["diagnostics"]["most_negative"],
        single["lambda_max"]["diagnostics"]["most_negative"],
        scale,
    )
    for a, b, e in zip(
        par["top_eigenvalues"]["value"], single["top_eigenvalues"]["value"], evals[:4], strict=True
    ):
        _close(a, b, scale)
        _close(a, float(e), 1e3 * scale)
    trace_scale = float(evals.abs().sum())
    _close(par["trace"]["value"], single["trace"]["value"], trace_scale)
    _close(par["frobenius"]["value"], single["frobenius"]["value"], float(H.pow(2).sum()))
    da = par["spectral_density"]["diagnostics"]
    db = single["spectral_density"]["diagnostics"]
    for key in da:
        if isinstance(da[key], float):
            _close(da[key], db[key], max(abs(db[key]), 1.0))

    # per-layer blocks and the GGN are summed over ranks too
    single_pl = run_measure(p, "lambda_max", {"per_layer": True, "tol": 1e-10})
    for block, res in single_pl["per_layer"].items():
        _close(got["per_layer"]["per_layer"][block]["value"], res["value"], scale)
        assert got["per_layer"]["per_layer"][block]["diagnostics"]["world_size"] == 2
    ggn = run_measure(p, "lambda_max", {"curvature": "ggn", "tol": 1e-10})
    _close(got["ggn"]["value"], ggn["value"], scale)
    adam = run_measure(p, "preconditioned_lambda_max", {"tol": 1e-10}, optimizer_state=_adam(p))
    _close(got["adam"]["value"], adam["value"], abs(adam["value"]))
    assert got["adam"]["diagnostics"]["world_size"] == 2

    ev = p.evaluate()
    _close(got["evaluate"]["loss"], ev["loss"], abs(ev["loss"]))
    _close(got["evaluate"]["accuracy"], ev["accuracy"], 1.0)
    g = p.gradient()
    assert float((got["gradient"] - g).abs().max()) <= REL * float(g.abs().max())


def test_shards_cover_every_example_once_and_keep_whole_batches() -> None:
    sizes = [16, 16, 16, 10, 6]
    for world in (1, 2, 3, 5):
        ranges = [shard_ranges(sizes, r, world) for r in range(world)]
        rows = [i for rs in ranges for a, b in rs for i in range(a, b)]
        assert rows == list(range(64)), world
        assert all(rs for rs in ranges)
        edges = {0, 16, 32, 48, 58, 64}
        assert all(a in edges and b in edges for rs in ranges for a, b in rs)  # whole batches
    # fewer batches than ranks: near-equal contiguous example ranges, cut at batch edges
    assert [shard_ranges([10, 3], r, 4) for r in range(4)] == [
        [(0, 3)],
        [(3, 6)],
        [(6, 9)],
        [(9, 10), (10, 13)],
    ]
    with pytest.raises(ValueError, match="at least one example per process"):
        shard_ranges([1], 0, 2)


def test_a_lazy_source_is_sharded_lazily() -> None:
    x = torch.arange(50, dtype=torch.float64).reshape(25, 2)
    y = torch.arange(25)
    read: list[tuple[int, int]] = []

    def rows(a: int, b: int) -> Batch:
        read.append((a, b))
        return Batch(x[a:b], y[a:b])

    src = BatchSource(25, 10, rows, lambda a, b: y[a:b], nbytes=25 * 16)
    part = shard(src, 1, 2)
    assert isinstance(part, BatchSource) and read == []
    assert part.sizes() == [10, 5] and torch.equal(part.targets(1), y[20:25])
    assert torch.equal(Batch.concat(list(part)).inputs, x[10:25])
    assert read == [(10, 20), (20, 25)]  # its own rows, a batch at a time
    assert shard(src, 0, 2).sizes() == [10]
