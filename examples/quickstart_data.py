"""Make a model and a dataset to measure: `model.pt2` and `digits.npz` in examples/out/.

    .venv/bin/python examples/quickstart_data.py [--out DIR]

examples/out/ (beside this script) is git-ignored: what the examples write stays out of the
repository's changes.

Trains a small MLP (64-32-10, ReLU; examples/digits_mlp.py) on scikit-learn's 1797 digits for
a few seconds, exports it with torch.export (eval mode, dynamic batch dimension) and saves the
data as an .npz holding `inputs` (float32, 1797 x 64) and `targets` (int64 class labels): the
two files the README's quickstart uploads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from digits_mlp import accuracy, export, load, train

OUT = Path(__file__).parent / "out"  # git-ignored; not resolved, so a linked copy writes beside it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=OUT, help="folder (default: examples/out, git-ignored)"
    )
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    x, y = load()
    model = train(x, y, epochs=40)
    export(model, out / "model.pt2")
    np.savez(out / "digits.npz", inputs=x.numpy(), targets=y.numpy())
    print(f"train accuracy {accuracy(model, x, y):.3f} on {len(x)} digits")
    print(f"wrote {out / 'model.pt2'} and {out / 'digits.npz'}")


if __name__ == "__main__":
    main()
