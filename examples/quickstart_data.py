"""Make a model and a dataset to measure: `model.pt2` and `digits.npz` in the current folder.

    .venv/bin/python examples/quickstart_data.py [--out DIR]

Trains a small MLP (64-32-10, ReLU) on scikit-learn's 1797 digits for a few seconds, exports it
with torch.export (eval mode, dynamic batch dimension) and saves the data as an .npz holding
`inputs` (float32, 1797 x 64) and `targets` (int64 class labels): the two files the README's
quickstart uploads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 40) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder (default: here)")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    model = train(x, y)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())

    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x[:8],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(out / "model.pt2"))
    np.savez(out / "digits.npz", inputs=x.numpy(), targets=y.numpy())
    print(f"train accuracy {acc:.3f} on {len(x)} digits")
    print(f"wrote {out / 'model.pt2'} and {out / 'digits.npz'}")


if __name__ == "__main__":
    main()
