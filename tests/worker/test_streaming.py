"""Data that streams: datasets read lazily from .npz (memory-mapped or chunked) and safetensors,
batches materialised one at a time, and a dataset larger than the process's memory limit
measured by streaming."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from tasks.engine.batches import BatchSource, DeviceBatches
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import Batch, HessianProblem
from tasks.worker.datasets import load_dataset
from tests.engine import models as M
from tests.engine.reference import dense_hessian

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, fmt: str, arrays: dict[str, np.ndarray]) -> Path:
    if fmt == "npz":
        np.savez(path, **arrays)
    elif fmt == "npz_compressed":
        np.savez_compressed(path, **arrays)
    else:
        save_file(arrays, str(path))
    return path


def _in_memory(x: np.ndarray, y: np.ndarray, batch_size: int) -> list[Batch]:
    whole = Batch(torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)))
    return [whole.slice(i, i + batch_size) for i in range(0, whole.size, batch_size)]


@pytest.mark.parametrize("fmt", ["npz", "npz_compressed", "safetensors"])
def test_lazy_batches_equal_the_arrays(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((103, 3, 5)).astype(np.float32)
    ids = rng.integers(0, 50, size=(103, 7)).astype(np.int32)
    y = rng.integers(0, 4, size=103).astype(np.int64)
    suffix = ".safetensors" if fmt == "safetensors" else ".npz"
    path = _write(tmp_path / f"d{suffix}", fmt, {"x": x, "ids": ids, "y": y})
    src = load_dataset(path, None, inputs_key=["x", "ids"], targets_key="y", batch_size=10,
                       max_samples=97)  # fmt: skip
    assert isinstance(src, BatchSource)
    assert len(src) == 10 and src.sizes() == [10] * 9 + [7]
    got = Batch.concat(list(src))
    assert torch.equal(got.inputs[0], torch.from_numpy(x[:97]))
    assert torch.equal(got.inputs[1], torch.from_numpy(ids[:97].astype(np.int64)))
    assert torch.equal(got.targets, torch.from_numpy(y[:97]))
    assert torch.equal(src[-1].targets, src.targets(9))
    if fmt == "npz":  # stored members are memory-mapped, not read
        from tasks.worker.datasets import _Arrays

        arrays = _Arrays(path, "npz", "d.npz").arrays
        assert isinstance(arrays["x"].rows(5, 9), np.memmap)


def test_nan_inputs_refused_at_load_by_the_streaming_pass(tmp_path: Path) -> None:
    from tasks.worker.loaders import LoadError

    x = np.zeros((300, 2), np.float32)
    x[257, 1] = np.nan  # in the second batch: found at load time, not during a measure
    path = _write(tmp_path / "n.npz", "npz", {"x": x, "y": np.zeros(300, np.int64)})
    with pytest.raises(LoadError, match="'x' holds NaN or Inf"):
        load_dataset(path, None, batch_size=128)


CASES = [
    ("mlp", lambda: M.MLP(d_in=4, hidden=5, d_out=3), (4,), "eval"),
    ("cnn_train", lambda: M.SmallCNN(classes=3), (1, 6, 6), "train"),
    ("tied", lambda: M.Tied(d=4, classes=3), (4,), "eval"),
    ("transformer", lambda: M.TinyTransformer(d=4, classes=2), (3, 4), "eval"),
]


@pytest.mark.parametrize(("name", "make", "shape", "mode"), CASES, ids=[c[0] for c in CASES])
def test_streamed_hvps_bit_identical_to_in_memory(tmp_path, name, make, shape, mode) -> None:
    torch.manual_seed(0)
    model = make().double()
    rng = np.random.default_rng(1)
    n, classes = 37, 2 if name == "transformer" else 3
    x = rng.standard_normal((n, *shape))
    y = rng.integers(0, classes, size=n)
    path = _write(tmp_path / "d.npz", "npz", {"x": x, "y": y})
    source = load_dataset(path, None, batch_size=8, dtype=torch.float64)
    lazy = HessianProblem(model, source, mode=mode, resident=False)
    eager = HessianProblem(model, _in_memory(x, y, 8), mode=mode)
    assert lazy.batches.streaming and not eager.batches.streaming
    assert lazy.counts == eager.counts and lazy.num_examples == eager.num_examples == n
    v = torch.randn(lazy.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    backends = ["per_batch", "cached"] + (["func"] if mode == "eval" else [])
    for backend in backends:
        a = HessianOperator(lazy, backend=backend).matvec(v)
        b = HessianOperator(eager, backend=backend).matvec(v)
        assert torch.equal(a, b), backend
    H = dense_hessian(eager)
    assert torch.allclose(HessianOperator(lazy, "per_batch").matvec(v), H @ v, rtol=0, atol=1e-10)
    assert torch.equal(lazy.gradient(), eager.gradient())


def test_auto_backend_caches_only_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.engine import operator as O

    torch.manual_seed(0)
    model = torch.nn.Linear(50_000, 2)
    batches = [Batch(torch.randn(4, 50_000), torch.tensor([0, 1, 1, 0])) for _ in range(3)]
    op = HessianOperator(HessianProblem(model, batches), backend="auto")
    assert op.backend == "cached"
    inputs = 3 * 4 * 50_000 * 4  # the graphs keep at least every input they saw
    assert inputs <= op.graph_estimate <= 4 * inputs + 4 * 100_002 * 4
    monkeypatch.setattr(O, "available_bytes", lambda device: 3 * op.graph_estimate)
    assert HessianOperator(HessianProblem(model, batches), backend="auto").backend == "cached"
    monkeypatch.setattr(O, "available_bytes", lambda device: op.graph_estimate)
    assert HessianOperator(HessianProblem(model, batches), backend="auto").backend == "per_batch"


def test_streaming_source_is_never_cached_by_auto(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _write(tmp_path / "d.npz", "npz", {"x": rng.standard_normal((20, 4)),
                                               "y": np.arange(20) % 3})  # fmt: skip
    source = load_dataset(path, None, batch_size=8, dtype=torch.float64)
    p = HessianProblem(M.MLP().double(), source, resident=False)
    assert HessianOperator(p, backend="auto").backend == "per_batch"
    assert isinstance(p.batches, DeviceBatches)


CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import tasks.worker.datasets as D  # torch, numpy and safetensors imported before the limit
    import torch
    from tasks.engine.runner import run_measure
    from tasks.engine.problem import HessianProblem

    path, mode = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = torch.nn.Linear(WIDTH, 10)
    def vmdata():
        for line in open("/proc/self/status"):
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    limit = vmdata() + HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        if mode == "whole":  # the dataset read into memory, as before streaming
            import numpy as np
            with np.load(path) as f:
                x = f["x"]
            print(json.dumps({"loaded": int(x.nbytes)}))
            sys.exit(0)
        src = D.load_dataset(path, None, batch_size=4096)
        problem = HessianProblem(model, src)
        out = run_measure(problem, "lambda_max", {"max_iter": 8, "tol": 0.05},
                          hvp_backend="per_batch")
        print(json.dumps({"value": out["value"], "streaming": problem.batches.streaming,
                          "limit": limit, "peak": vmdata()}))
    except MemoryError as e:
        print(json.dumps({"memory_error": str(e)[:200]}))
    """
)


@pytest.mark.slow
def test_dataset_larger_than_the_memory_limit_is_measured_by_streaming(tmp_path: Path) -> None:
    width, n, headroom = 1000, 100_000, 160 << 20  # 400 MB of float32 inputs, 160 MB allowed
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, width), dtype=np.float32)
    y = rng.integers(0, 10, size=n)
    path = _write(tmp_path / "big.npz", "npz", {"x": x, "y": y})
    assert path.stat().st_size > 2 * headroom
    code = CHILD.replace("WIDTH", str(width)).replace("HEADROOM", str(headroom))

    def child(mode: str) -> dict:
        r = subprocess.run(
            [sys.executable, "-c", code, str(path), mode],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    whole = child("whole")
    assert "memory_error" in whole, whole  # the limit bites: the file does not fit in it
    streamed = child("stream")
    assert streamed.get("streaming") is True, streamed
    assert streamed["peak"] <= streamed["limit"]

    # the same measure on the same data held in memory, in this process
    torch.manual_seed(0)
    model = torch.nn.Linear(width, 10)
    from tasks.engine.runner import run_measure

    problem = HessianProblem(model, _in_memory(x, y, 4096))
    ref = run_measure(problem, "lambda_max", {"max_iter": 8, "tol": 0.05}, hvp_backend="per_batch")
    assert streamed["value"] == pytest.approx(ref["value"], rel=1e-12, abs=0)
