"""A basis spilled to a file (tasks.engine.file_columns): every way `Basis` reads and writes
a chunk gives what the same chunk in memory gives, a Lanczos run with its basis in a file is
the run with it in memory to rounding (through restarts too), the plan spills only what
memory cannot hold, and the result says where the basis was."""

from __future__ import annotations

import os

import pytest
import torch

from tasks.engine.basis import Basis
from tasks.engine.file_columns import FileColumns
from tasks.engine.lanczos import lanczos
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.memory import InsufficientMemory, plan_basis, working_bytes
from tasks.engine.operator import HessianOperator
from tasks.engine.runner import run_measure
from tests.engine import cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_file_columns_read_and_write_like_a_tensor(dtype: torch.dtype, tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(1000, 6, generator=g, dtype=torch.float64).to(dtype)
    chunk = FileColumns(1000, 6, dtype, str(tmp_path))
    chunk[:, 0:6] = dense
    assert chunk.numel() == 0 and chunk.file_bytes == dense.numel() * dense.element_size()
    assert torch.equal(chunk[100:357], dense[100:357])
    assert torch.equal(chunk[:, 4], dense[:, 4]) and torch.equal(chunk[:, -1], dense[:, -1])
    view = chunk[:, :3]
    assert view.shape == (1000, 3) and torch.equal(view[0:1000], dense[:, :3])
    block = torch.randn(50, 2, generator=g, dtype=torch.float64)
    chunk[200:250, :2] = block
    dense[200:250, :2] = block.to(dtype)
    assert torch.equal(chunk[0:1000], dense)
    assert not list(tmp_path.iterdir())  # the file is unlinked: nothing is left behind
    with pytest.raises(TypeError):
        chunk[1:3, 2]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float64 rounding: the same numbers summed in another order."""
    return torch.allclose(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_spilled_basis_computes_what_the_basis_in_memory_computes(dtype, tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    dim = 3 * Basis._ROWS + 17  # several blocks of rows
    columns = torch.linalg.qr(torch.randn(dim, 9, generator=g, dtype=torch.float64))[0]
    memory = Basis(dim, capacity=9, chunk=4, dtype=dtype)
    spilled = Basis(dim, capacity=9, chunk=4, dtype=dtype, spill=True, spill_dir=str(tmp_path))
    for B in (memory, spilled):
        B.append(columns[:, :5])
        B.append(columns[:, 5])
    assert spilled.nbytes == 0 and spilled.file_bytes == memory.nbytes
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    assert same(memory.project_out(w), spilled.project_out(w))
    assert same(torch.tensor(memory.dot(-2, w)), torch.tensor(spilled.dot(-2, w)))
    assert torch.equal(memory.column(3), spilled.column(3))
    Y = torch.randn(6, 3, generator=g, dtype=torch.float64)
    memory.transform(Y)
    spilled.transform(Y)
    assert len(spilled) == 3
    assert same(memory.combine(torch.ones(3)), spilled.combine(torch.ones(3)))
    assert same(memory.column(2).double(), spilled.column(2).double())


@pytest.mark.parametrize("name", ["mlp_tanh", "transformer"])
def test_lanczos_with_a_spilled_basis_is_the_run_in_memory(name: str, tmp_path) -> None:
    p, H = cases.float32_case(name)
    exact = torch.linalg.eigvalsh(H).flip(0)
    runs = {
        storage: lanczos(
            HessianOperator(p),
            k=2,
            max_basis=8,  # restarts: the spilled basis is transformed in place
            max_iter=600,
            basis_storage=storage,
            spill_dir=str(tmp_path),
            warn=False,
        )
        for storage in ("memory", "file")
    }
    memory, spilled = runs["memory"], runs["file"]
    assert spilled.basis_spilled and not memory.basis_spilled
    assert spilled.restarts > 0 and spilled.converged
    assert memory.converged and abs(spilled.hvps - memory.hvps) <= 2
    apart = (torch.tensor(spilled.eigenvalues) - torch.tensor(memory.eigenvalues)).abs()
    assert bool((apart <= torch.tensor(memory.error_estimates)).all())
    err = (torch.tensor(spilled.eigenvalues, dtype=torch.float64) - exact[:2]).abs()
    assert bool((err <= torch.tensor(spilled.error_estimates)).all())
    assert spilled.basis_bytes_peak == 0 and spilled.basis_file_bytes_peak > 0
    assert spilled.basis_file_bytes_peak == memory.basis_bytes_peak
    assert spilled.bytes_per_parameter == working_bytes(p.dim, torch.float32, True) / p.dim
    assert spilled.bytes_per_parameter == memory.bytes_per_parameter - (
        memory.basis_bytes_peak / p.dim - 4  # no basis in memory; the column multiplied
    )


def test_the_job_field_spills_and_the_result_says_so() -> None:
    p, H = cases.float32_case("mlp_tanh")
    top = float(torch.linalg.eigvalsh(H)[-1])
    runs = {
        storage: run_measure(p, "lambda_max", {"basis_storage": storage})
        for storage in ("memory", "file")
    }
    spilled, memory = runs["file"], runs["memory"]
    diag = spilled["diagnostics"]
    assert diag["basis_spilled"] and diag["basis_file_bytes_peak"] > 0
    assert diag["basis_bytes_peak"] == 0 and not memory["diagnostics"]["basis_spilled"]
    assert spilled["converged"] and abs(spilled["value"] - top) <= diag["error_estimate"]
    with pytest.raises(ValueError, match="basis_storage"):
        run_measure(p, "lambda_max", {"basis_storage": "disk"})


def test_auto_spills_only_what_memory_cannot_hold(tmp_path) -> None:
    dim, item = 1000, 4
    working = working_bytes(dim, torch.float32)
    roomy = plan_basis(dim, 40, 3, torch.float32, "cpu", working + 40 * dim * item)
    assert roomy.columns == 40 and not roomy.spill
    tight = plan_basis(
        dim, 40, 3, torch.float32, "cpu", working + 10 * dim * item, spill_dir=str(tmp_path)
    )
    assert tight.columns == 40 and tight.spill and not tight.limited_by_memory
    assert tight.spill_dir == str(tmp_path)
    forced = plan_basis(dim, 40, 3, torch.float32, "cpu", storage="file")
    assert forced.spill and forced.columns == 40
    with pytest.raises(InsufficientMemory) as info:  # the working vectors must be in memory
        plan_basis(dim, 40, 3, torch.float32, "cpu", working + dim * item - 1, storage="file")
    assert "working vectors" in str(info.value) and "basis_storage" in str(info.value)


def test_a_run_asked_for_in_too_little_memory_spills_and_converges(tmp_path) -> None:
    A = torch.diag(torch.linspace(1.0, 100.0, 400, dtype=torch.float64))
    budget = working_bytes(400, torch.float64) + 5 * 8 * 400  # 5 of 40 columns in memory
    res = lanczos(
        MatrixOperator(A),
        k=3,
        tol=1e-10,
        memory_budget_bytes=budget,
        spill_dir=str(tmp_path),
        warn=False,
    )
    assert res.basis_spilled and res.max_basis == 40 and not res.basis_limited_by_memory
    assert res.converged and abs(res.eigenvalues[0] - 100.0) <= 1e-8
    assert os.listdir(tmp_path) == []
