"""Targets are checked whole before any measure: every label out of range, and targets of the
wrong shape for `mse`, are named with the fix, never left to torch's own messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.worker.datasets import load_dataset, probe
from tasks.worker.loaders import LoadedModel, LoadError
from tests import artifacts as A


def _model(out: int = 10) -> LoadedModel:
    return LoadedModel(A.mlp(in_features=4, out=out), "torch_export")


def test_every_label_out_of_range_gets_the_clear_message(tmp_path: Path) -> None:
    x, _ = A.data(n=6, in_features=4)
    path = A.save_npz(tmp_path / "d.npz", x, np.full(6, 10, np.int64))
    with pytest.raises(LoadError) as err:
        probe(_model(), load_dataset(path, None), "d.npz")
    assert "label 10 but the model has 10 classes (labels 0..9)" in err.value.detail
    assert "out of bounds" not in err.value.detail
    # one bad label beyond the first batch: the same message
    y = np.zeros(6, np.int64)
    y[5] = 12
    path = A.save_npz(tmp_path / "e.npz", x, y)
    with pytest.raises(LoadError, match="label 12 but the model has 10 classes"):
        probe(_model(), load_dataset(path, None, batch_size=2), "e.npz")


def test_mse_with_one_target_per_example_for_ten_outputs_names_the_fix(tmp_path: Path) -> None:
    x, _ = A.data(n=6, in_features=4)
    path = A.save_npz(tmp_path / "r.npz", x, np.linspace(0, 1, 6).astype(np.float32))
    with pytest.raises(LoadError) as err:
        probe(_model(), load_dataset(path, None, loss="mse"), "r.npz", loss="mse")
    detail = err.value.detail
    assert "(2, 10)" in detail and "(2,)" in detail and "shape (2, 10)" in detail, detail
    assert "output_key" in detail
    y = np.arange(6) % 3
    path = A.save_npz(tmp_path / "c.npz", x, y)
    with pytest.raises(LoadError, match="class labels go with loss 'cross_entropy'"):
        probe(_model(), load_dataset(path, None, loss="mse"), "c.npz", loss="mse")
    # (N,) targets for (N, 1) outputs still work
    out = probe(_model(1), load_dataset(path, None, loss="mse"), "c.npz", loss="mse")
    assert out.shape == (2, 1) and torch.isfinite(out).all()
