"""Dropout in train mode: one seeded mask per batch, the same in every forward pass.

Without the seeding each forward pass draws a fresh mask: the two passes of a cached product,
the passes of per-batch products and those of another measure all see different losses, and
λmax, top-3's λ1 and the dense Hessian disagree by tens of percent. With it the loss is a
deterministic function of the weights, so every measure of a job — and the dense float64
reference, taken through the problem's own forward — sees one symmetric Hessian.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from tasks.engine.operator import HessianOperator
from tasks.engine.problem import Batch, HessianProblem, batch_key
from tasks.engine.runner import run_measure
from tests.engine.reference import dense_hessian

pytestmark = pytest.mark.filterwarnings("ignore::tasks.engine.problem.TrainModeWarning")

DROPOUT_P = 0.5


def dropout_mlp(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Dropout(DROPOUT_P), nn.Linear(8, 3), nn.Dropout(0.2)
    ).to(dtype)


def data(dtype: torch.dtype = torch.float64, batches: int = 2) -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    return [
        Batch(torch.randn(20, 6, generator=g).to(dtype), torch.randint(0, 3, (20,), generator=g))
        for _ in range(batches)
    ]


def problem(model: object, batches: list[Batch], seed: int = 0) -> HessianProblem:
    return HessianProblem(model, batches, mode="train", dropout_seed=seed)


def top(H: Tensor, k: int = 1) -> list[float]:
    return torch.linalg.eigvalsh(H).flip(0)[:k].tolist()


def lambda_and_top3(p: HessianProblem, backend: str, tol: float) -> tuple[dict, dict]:
    lam = run_measure(p, "lambda_max", {"tol": tol}, hvp_backend=backend)
    top3 = run_measure(p, "top_eigenvalues", {"k": 3, "tol": tol}, hvp_backend=backend)
    return lam, top3


@pytest.mark.parametrize("backend", ["cached", "per_batch"])
def test_float64_measures_agree_with_each_other_and_the_dense_hessian(backend: str) -> None:
    p = problem(dropout_mlp(), data())
    ref = top(dense_hessian(p), 3)
    lam, top3 = lambda_and_top3(p, backend, 1e-10)
    assert lam["converged"] and top3["converged"]
    err_lam = lam["diagnostics"]["error_estimate"]
    err_top = top3["diagnostics"]["error_estimates"][0]
    assert abs(lam["value"] - top3["value"][0]) <= err_lam + err_top + 1e-12
    assert lam["value"] == pytest.approx(ref[0], rel=1e-9)
    assert top3["value"] == pytest.approx(ref, rel=1e-8)
    for result in (lam, top3):
        assert result["diagnostics"]["dropout_seed"] == 0
        assert result["diagnostics"]["mode"] == "train"


def test_float32_measures_agree_within_their_error_estimates_and_with_float64() -> None:
    """The float64 reference: the same model and data in float64, given the float32 batches'
    keys, so its masks are drawn from the same seeds (CPU dropout masks do not depend on the
    dtype)."""
    batches32 = data(torch.float32)
    p = problem(dropout_mlp(torch.float32), batches32)
    lam, top3 = lambda_and_top3(p, "cached", 1e-6)
    err_lam = lam["diagnostics"]["error_estimate"]
    err_top = top3["diagnostics"]["error_estimates"][0]
    assert abs(lam["value"] - top3["value"][0]) <= err_lam + err_top
    p64 = problem(dropout_mlp(torch.float64), data(torch.float64))
    for b64, b32 in zip(p64.batches, batches32, strict=True):
        object.__setattr__(b64, "_key", batch_key(b32))
    ref = top(dense_hessian(p64))[0]
    assert abs(lam["value"] - ref) <= max(err_lam, 1e-6 * ref)
    assert abs(top3["value"][0] - ref) <= max(err_top, 1e-6 * ref)


def test_another_seed_is_another_draw_again_self_consistent() -> None:
    answers = []
    for seed in (0, 7):
        p = problem(dropout_mlp(), data(), seed)
        ref = top(dense_hessian(p))[0]
        lam, top3 = lambda_and_top3(p, "per_batch", 1e-10)
        assert lam["value"] == pytest.approx(ref, rel=1e-9)
        assert top3["value"][0] == pytest.approx(ref, rel=1e-9)
        assert lam["diagnostics"]["dropout_seed"] == seed
        answers.append(lam["value"])
    assert abs(answers[0] - answers[1]) > 1e-3 * abs(answers[0])


def test_products_are_symmetric_and_repeat_exactly() -> None:
    p = problem(dropout_mlp(), data())
    op = HessianOperator(p, backend="per_batch")
    V = torch.randn(p.dim, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u, v = V[:, 0], V[:, 1]
    Hu, Hv = op.matvec(u), op.matvec(v)
    assert torch.equal(op.matvec(u), Hu)
    assert float(v @ Hu) == pytest.approx(float(u @ Hv), rel=1e-12)
    assert p.loss() == p.loss()


def test_per_layer_blocks_see_the_same_masks() -> None:
    p = problem(dropout_mlp(), data())
    H = dense_hessian(p)
    result = run_measure(p, "lambda_max", {"tol": 1e-10, "per_layer": True})
    offset = 0
    for block, sub in result["per_layer"].items():
        n = sub["diagnostics"]["dim"]
        ref = top(H[offset : offset + n, offset : offset + n])[0]
        assert sub["value"] == pytest.approx(ref, rel=1e-8), block
        assert sub["diagnostics"]["dropout_seed"] == 0
        offset += n
    assert offset == p.dim


def test_the_model_and_the_callers_random_state_are_left_alone() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    p = problem(dropout_mlp(), data())
    torch.random.set_rng_state(state)
    run_measure(p, "lambda_max", {"tol": 1e-8})
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("exported_in", ["train", "eval"])
def test_exported_program_draws_the_masks_of_the_module(exported_in: str) -> None:
    """aten.dropout (or native_dropout after decomposition) in the graph draws from the same
    seeded generator, so the exported program measures what the module does."""
    model, batches = dropout_mlp(), data()
    module_answer = run_measure(problem(model, batches), "lambda_max", {"tol": 1e-10})
    source = copy.deepcopy(model).train(exported_in == "train")
    programs = [torch.export.export(source, (batches[0].inputs,))]
    if exported_in == "train":  # decomposed, eval-mode dropout is gone from the graph
        programs.append(copy.deepcopy(programs[0]).run_decompositions())
    for program in programs:
        p = problem(program, batches)
        assert p.mode == "train" and p.dropout_active
        ref = top(dense_hessian(p))[0]
        lam, top3 = lambda_and_top3(p, "cached", 1e-10)
        assert lam["value"] == pytest.approx(ref, rel=1e-9)
        assert top3["value"][0] == pytest.approx(ref, rel=1e-9)
        assert lam["value"] == pytest.approx(module_answer["value"], rel=1e-12)
        assert lam["diagnostics"]["dropout_seed"] == 0


class FunctionalDropout(nn.Module):
    """Dropout called as a function inside the model's own code (no nn.Dropout layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.dropout(torch.tanh(self.fc1(x)), 0.5, self.training)
        return self.fc2(h)


def test_dropout_inside_the_models_code_is_seeded_and_reported() -> None:
    torch.manual_seed(0)
    p = problem(FunctionalDropout().double(), data(), seed=3)
    assert not p.dropout_active  # nothing to see before a forward pass draws
    ref = top(dense_hessian(p))[0]
    lam = run_measure(p, "lambda_max", {"tol": 1e-10}, hvp_backend="per_batch")
    assert lam["value"] == pytest.approx(ref, rel=1e-9)
    assert lam["diagnostics"]["dropout_seed"] == 3


def test_seed_reported_only_where_dropout_is_active() -> None:
    model, batches = dropout_mlp(), data()
    evaluated = run_measure(HessianProblem(model, batches), "lambda_max", {"tol": 1e-8})
    assert "dropout_seed" not in evaluated["diagnostics"]
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = run_measure(problem(bn, batches), "lambda_max", {"tol": 1e-8})
    assert trained["diagnostics"]["mode"] == "train"
    assert "dropout_seed" not in trained["diagnostics"]
    no_drop = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.0)).double()
    assert not problem(no_drop, batches).dropout_active


def test_batchnorm_train_mode_is_unchanged_by_the_seeding() -> None:
    """A model without dropout measures the same in train mode with any dropout_seed."""
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    batches = data()
    values = [
        run_measure(problem(bn, batches, seed), "lambda_max", {"tol": 1e-10})["value"]
        for seed in (0, 5)
    ]
    assert values[0] == values[1]
    assert values[0] == pytest.approx(top(dense_hessian(problem(bn, batches)))[0], rel=1e-9)


def test_the_same_batch_gets_the_same_key_wherever_it_is_read() -> None:
    a, b = data(batches=2)
    same = Batch(a.inputs.clone(), a.targets.clone())
    assert batch_key(a) == batch_key(same) != batch_key(b)
    assert batch_key(a.slice(0, 10)) != batch_key(a)
    tokens = Batch({"input_ids": torch.arange(12).view(3, 4)}, torch.zeros(3, dtype=torch.int64))
    assert isinstance(batch_key(tokens), int)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_masks_are_seeded_per_batch() -> None:
    device = torch.device("cuda", 0)
    p = HessianProblem(dropout_mlp(), data(), mode="train", dropout_seed=0, device=device)
    ref = top(dense_hessian(p))[0]
    state = torch.cuda.get_rng_state(device)
    lam, top3 = lambda_and_top3(p, "per_batch", 1e-10)
    assert torch.equal(torch.cuda.get_rng_state(device), state)
    assert lam["value"] == pytest.approx(ref, rel=1e-9)
    assert top3["value"][0] == pytest.approx(ref, rel=1e-9)
    assert lam["diagnostics"]["dropout_seed"] == 0
    other = HessianProblem(dropout_mlp(), data(), mode="train", dropout_seed=1, device=device)
    assert abs(run_measure(other, "lambda_max", {"tol": 1e-10})["value"] - ref) > 1e-3 * ref


def _dropout_rank(rank: int, world: int, port: int, out: Any) -> None:
    """A rank of a two-process train-mode measure: its shard of whole batches."""
    from tasks.engine import distributed

    torch.set_num_threads(1)
    distributed.init_group(rank, world, "cpu", port, timeout_s=120)
    try:
        shard = distributed.shard(data(batches=4), rank, world)
        p = distributed.DistributedProblem(dropout_mlp(), shard, mode="train", dropout_seed=5)
        lam = run_measure(p, "lambda_max", {"tol": 1e-10})
        if rank == 0:
            out.put(lam)
    finally:
        distributed.destroy()


def test_data_parallel_ranks_draw_the_masks_of_one_process() -> None:
    """A batch's mask depends on the seed and the batch, not on the process that holds it: two
    ranks holding whole batches measure what one process does."""
    from tasks.engine.distributed import free_port

    p = problem(dropout_mlp(), data(batches=4), seed=5)
    single = run_measure(p, "lambda_max", {"tol": 1e-10})
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = mp.start_processes(
        _dropout_rank, args=(2, free_port(), out), nprocs=2, join=False, start_method="spawn"
    )
    try:
        got = out.get(timeout=300)
        while not procs.join(timeout=30):
            pass
    finally:
        for proc in procs.processes:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
    assert got["diagnostics"]["world_size"] == 2 and got["diagnostics"]["dropout_seed"] == 5
    assert got["value"] == pytest.approx(single["value"], rel=1e-10)
    assert single["value"] == pytest.approx(top(dense_hessian(p))[0], rel=1e-9)
