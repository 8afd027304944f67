"""The training step of the example CI pipeline: train the digits MLP (examples/digits_mlp.py)
and write what the sharpness step measures: the model as model.pt2 (torch.export) and the
training data as data.npz (`inputs`, `targets`).

    python -m examples.ci.train_digits --out build/sharpness [--epochs 60] [--lr 0.01]

A pipeline would train its own model here; the rest of examples/ci/sharpness_gate.sh is the
same for any model the service takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from examples.digits_mlp import accuracy, export, load, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/sharpness"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--examples", type=int, default=512, help="training examples written")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x, y = load()
    model = train(x, y, args.epochs, args.lr)
    export(model, args.out / "model.pt2")
    n = args.examples
    np.savez(args.out / "data.npz", inputs=x[:n].numpy(), targets=y[:n].numpy())
    print(f"trained: accuracy {accuracy(model, x, y):.3f}; wrote {args.out}/model.pt2, data.npz")


if __name__ == "__main__":
    main()
