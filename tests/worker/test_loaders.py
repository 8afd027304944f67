"""Safe loading of models and data: each bad input is a LoadError naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tasks.worker.datasets import load_dataset, probe
from tasks.worker.loaders import LoadError, load_model
from tests import artifacts as A


@pytest.fixture
def pt2(tmp_path: Path) -> Path:
    return A.export(A.mlp(), tmp_path / "m.pt2", 4, torch.float64)


def test_weights_only_is_forced_in_this_process() -> None:
    assert os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"


def test_torch_imported_first_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
    out = subprocess.run(
        [sys.executable, "-c", "import torch, tasks.worker.job"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "UnsafeTorchImport" in out.stderr


def test_export_keeps_dtype_and_reports_input_shape(pt2: Path) -> None:
    m = load_model(pt2, {"format": "torch_export"})
    assert m.dtype == torch.float64 and m.format == "torch_export"
    assert m.input_shape is not None and m.input_shape.endswith(", 4)")


def test_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(A.mlp()), str(path))
    m = load_model(path, {"format": "torchscript"})
    assert m.module(torch.zeros(2, 4)).shape == (2, 3)


def test_safetensors_with_zoo_mlp_and_cnn(tmp_path: Path) -> None:
    from tasks.worker import zoo

    config = {"in_features": 4, "hidden": [8], "out_features": 3, "activation": "tanh"}
    net = zoo.build("mlp", config)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    meta = {"format": "safetensors", "architecture": "mlp", "config": config}
    m = load_model(tmp_path / "w.safetensors", meta)
    assert torch.equal(m.module(torch.ones(1, 4)), net(torch.ones(1, 4)))

    cnn_cfg = {"in_channels": 1, "num_classes": 10, "channels": [4], "image_size": 8}
    cnn = zoo.build("cnn", cnn_cfg)
    save_file(cnn.state_dict(), str(tmp_path / "c.safetensors"))
    c = load_model(
        tmp_path / "c.safetensors",
        {"format": "safetensors", "architecture": "cnn", "config": cnn_cfg},
    )
    assert c.module.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    # the same MLP written as a bare nn.Sequential: keys 0.weight, 2.weight, ...
    seq = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    save_file(seq.state_dict(), str(tmp_path / "seq.safetensors"))
    s = load_model(tmp_path / "seq.safetensors", meta)
    assert torch.equal(s.module(torch.ones(2, 4)), seq(torch.ones(2, 4)))

    other = {**config, "hidden": [9]}
    with pytest.raises(LoadError, match="(?s)do not match architecture 'mlp'.*layers.0.weight"):
        load_model(tmp_path / "w.safetensors", {**meta, "config": other})
    with pytest.raises(LoadError, match="unknown architecture 'resnet'"):
        load_model(tmp_path / "w.safetensors", {**meta, "architecture": "resnet"})


def test_other_formats_refused_with_export_recipe(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"whatever")
    with pytest.raises(LoadError, match="torch.export.save"):
        load_model(path, {"format": "pickle"})


def test_nan_weights_name_the_parameter(tmp_path: Path) -> None:
    net = A.mlp()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    path = A.export(net, tmp_path / "nan.pt2", 4)
    with pytest.raises(LoadError, match="'2.weight' holds 1 NaN or Inf"):
        load_model(path, {"format": "torch_export", "filename": "nan.pt2"})


@pytest.mark.parametrize("variant", [A.tampered_weight, A.tampered_opaque])
def test_tampered_pt2_refused_without_running_payload(pt2: Path, tmp_path: Path, variant) -> None:
    marker = tmp_path / "pwned"
    bad = variant(pt2, tmp_path / "bad.pt2", marker)
    with pytest.raises(LoadError, match="pickle"):
        load_model(bad, {"format": "torch_export"})
    assert not marker.exists()


def test_corrupt_archive(tmp_path: Path) -> None:
    path = tmp_path / "c.pt2"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 50)
    with pytest.raises(LoadError, match="not a valid zip"):
        load_model(path, {"format": "torch_export"})


def test_dataset_batches_truncates_and_types(tmp_path: Path) -> None:
    x, y = A.data(n=50)
    path = A.save_npz(tmp_path / "d.npz", x, y)
    batches = load_dataset(path, {"format": "npz"}, max_samples=45, batch_size=20)
    assert [b[0].shape[0] for b in batches] == [20, 20, 5]
    assert batches[0][0].dtype == torch.float32 and batches[0][1].dtype == torch.int64
    mse = load_dataset(path, None, loss="mse", dtype=torch.float64)
    assert mse[0][1].dtype == torch.float64 and mse[0][0].dtype == torch.float64


def test_dataset_errors_name_the_field(tmp_path: Path) -> None:
    x, y = A.data(n=10)
    np.savez(tmp_path / "k.npz", a=x, b=y)
    with pytest.raises(LoadError, match=r"no common pair .*\(arrays: a, b\).*inputs_key"):
        load_dataset(tmp_path / "k.npz", None)
    with pytest.raises(LoadError, match=r"no array 'c' \(arrays: a, b\)"):
        load_dataset(tmp_path / "k.npz", None, inputs_key="c", targets_key="b")
    np.savez(tmp_path / "n.npz", inputs=x, targets=y[:7])
    with pytest.raises(LoadError, match="differ in examples: 'inputs' 10, 'targets' 7"):
        load_dataset(tmp_path / "n.npz", None)
    np.savez(tmp_path / "o.npz", inputs=np.array([{"a": 1}], dtype=object), targets=y[:1])
    with pytest.raises(LoadError, match="cannot read"):
        load_dataset(tmp_path / "o.npz", None)
    with pytest.raises(LoadError, match="expected .npz or .safetensors"):
        load_dataset(tmp_path / "d.csv", None)


def test_shape_mismatch_names_both_shapes(pt2: Path, tmp_path: Path) -> None:
    model = load_model(pt2, {"format": "torch_export"})
    x, y = A.data(n=8, in_features=5)
    batches = load_dataset(A.save_npz(tmp_path / "d.npz", x, y), None, dtype=model.dtype)
    with pytest.raises(LoadError) as err:
        probe(model, batches, "d.npz")
    assert (
        "expects inputs of shape (" in err.value.detail and "(5,) per example" in err.value.detail
    )
