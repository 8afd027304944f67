"""Dinh et al. 2017: sharpness is not invariant to reparametrisation; adaptive sharpness is.

A ReLU network is positively homogeneous: scaling its first layer by α and its second by 1/α
computes exactly the same function, so generalization cannot change. λmax (and standard,
unscaled sharpness) change with α — a flat minimum can be made arbitrarily sharp. Adaptive
sharpness (Kwon et al. 2021), whose perturbation ball is scaled by |w|, does not change.

    python -m examples.reproductions.rescaling [--quick] [--dataset mnist5k]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from examples.reproductions.common import DATASETS, Split, mlp, print_table, train_sgd
from sharpness_client import Client

ALPHAS = [0.25, 0.5, 1.0, 2.0, 4.0]
QUICK_ALPHAS = [0.5, 1.0, 4.0]
COLUMNS = ["alpha", "test_acc", "lambda_max", "standard_sharpness", "adaptive_sharpness"]
SHARPNESS = {"kind": "worst", "norm": "linf", "rho": 2e-3, "iterations": 10, "seed": 0}


def rescaled(model: nn.Sequential, alpha: float) -> nn.Sequential:
    """First layer ×α, second ×1/α: the same function for a ReLU MLP, other weights."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[0].weight.mul_(alpha)
        out[0].bias.mul_(alpha)
        out[2].weight.div_(alpha)
    return out


def run(client: Client, data: Split, *, quick: bool = False) -> list[dict]:
    train_ref = client.datasets.from_arrays(data.x_train, data.y_train)
    test_ref = client.datasets.from_arrays(data.x_test, data.y_test)
    base = mlp(data.features)
    train_sgd(base, data, lr=0.1, batch_size=32, max_epochs=100, target_loss=0.05)
    rows = []
    for alpha in QUICK_ALPHAS if quick else ALPHAS:
        model = rescaled(base, alpha)
        common = {"example_inputs": data.x_train[:2], "labels": {"reproduction": "rescaling"}}
        adaptive = client.measure(
            model,
            train_ref,
            ["lambda_max", "adaptive_sharpness"],
            params={"adaptive_sharpness": {**SHARPNESS, "adaptive": True}},
            eval_data=test_ref,
            **common,
        )
        standard = client.measure(
            model,
            train_ref,
            ["adaptive_sharpness"],
            params={"adaptive_sharpness": {**SHARPNESS, "adaptive": False}},
            **common,
        )
        rows.append(
            {
                "alpha": alpha,
                "test_acc": ((adaptive.evaluation or {}).get("test") or {}).get("accuracy"),
                "lambda_max": adaptive.results["lambda_max"].value,
                "standard_sharpness": standard.results["adaptive_sharpness"].value,
                "adaptive_sharpness": adaptive.results["adaptive_sharpness"].value,
            }
        )
    return rows


def spread(values: list[float]) -> float:
    """(max − min) / max |value|: 0 when all equal."""
    return (max(values) - min(values)) / max(abs(v) for v in values)


def effect_holds(rows: list[dict]) -> bool:
    """λmax varies by more than 2× across α while adaptive sharpness stays within 1e-3."""
    lams = [r["lambda_max"] for r in rows]
    adaptive = [r["adaptive_sharpness"] for r in rows]
    return max(lams) / min(lams) > 2 and spread(adaptive) < 1e-3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three values of α")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    args = ap.parse_args()
    with Client() as client:
        rows = run(client, DATASETS[args.dataset](), quick=args.quick)
    print_table(f"Rescaling a ReLU MLP by α and 1/α ({args.dataset})", COLUMNS, rows)
    lams = [r["lambda_max"] for r in rows]
    print(
        f"\nλmax varies {max(lams) / min(lams):.1f}×; adaptive sharpness varies "
        f"{spread([r['adaptive_sharpness'] for r in rows]):.1e} (relative); the function is "
        f"the same. Effect {'holds' if effect_holds(rows) else 'does NOT hold'}."
    )


if __name__ == "__main__":
    main()
