"""Dinh et al. 2017: sharpness is not invariant to reparametrisation; adaptive sharpness is.

A ReLU network is positively homogeneous: scaling its first layer by α and its second by 1/α
computes exactly the same function, so generalization cannot change. λmax (and standard,
unscaled sharpness) change with α — a flat minimum can be made arbitrarily sharp. Adaptive
sharpness (Kwon et al. 2021), whose perturbation ball is scaled by |w|, does not change.

The factors α = 0.1, 0.5, 3 are not powers of two, so the rescaled weights are rounded in
float32 and the invariance is tested as it would be met in practice, not only where the
scaling is exact. Each of several seeds trains its own network; per seed the table gives
λmax(α) / λmax(1) and the relative spread of adaptive sharpness over α, and the summary their
mean and 95% interval over the seeds.

    python -m examples.reproductions.rescaling [--quick] [--dataset mnist5k]
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from examples.reproductions.common import (
    Split,
    cli,
    estimate,
    trained_mlp,
)
from sharpness_client import Client

ALPHAS = [0.1, 0.5, 1.0, 3.0]
QUICK_ALPHAS = [0.1, 1.0, 3.0]
SEEDS = [0, 1, 2, 3, 4]
QUICK_SEEDS = [0, 1, 2]
COLUMNS = [
    "seed",
    "alpha",
    "test_acc",
    "lambda_max",
    "lambda_max/lambda_max(1)",
    "standard_sharpness",
    "adaptive_sharpness",
]
#: adaptive sharpness counts as unchanged within this relative spread (float32 rounding)
INVARIANCE_TOLERANCE = 1e-3
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
    rows = []
    for seed in QUICK_SEEDS if quick else SEEDS:
        base, _ = trained_mlp(data, seed, lr=0.1, batch_size=32, max_epochs=100, target_loss=0.05)
        mine = []
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
            row = {
                "seed": seed,
                "alpha": alpha,
                "test_acc": ((adaptive.evaluation or {}).get("test") or {}).get("accuracy"),
                "lambda_max": adaptive.results["lambda_max"].value,
                "standard_sharpness": None,
                "adaptive_sharpness": adaptive.results["adaptive_sharpness"].value,
            }
            if not quick or seed == (QUICK_SEEDS if quick else SEEDS)[0]:
                standard = client.measure(
                    model,
                    train_ref,
                    ["adaptive_sharpness"],
                    params={"adaptive_sharpness": {**SHARPNESS, "adaptive": False}},
                    **common,
                )
                row["standard_sharpness"] = standard.results["adaptive_sharpness"].value
            mine.append(row)
        unit = next(r["lambda_max"] for r in mine if r["alpha"] == 1.0)
        for r in mine:
            r["lambda_max/lambda_max(1)"] = r["lambda_max"] / unit
        rows += mine
    return rows


def spread(values: list[float]) -> float:
    """(max − min) / max |value|: 0 when all equal."""
    return (max(values) - min(values)) / max(abs(v) for v in values)


def _per_seed(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r.get("seed", 0), []).append(r)
    return out


def effect_holds(rows: list[dict]) -> bool:
    """In every seed, λmax varies by more than 2× across α while adaptive sharpness stays
    within INVARIANCE_TOLERANCE (relative)."""
    for rs in _per_seed(rows).values():
        lams = [r["lambda_max"] for r in rs]
        adaptive = [r["adaptive_sharpness"] for r in rs]
        if not (max(lams) / min(lams) > 2 and spread(adaptive) < INVARIANCE_TOLERANCE):
            return False
    return True


def report(rows: list[dict]) -> list[str]:
    seeds = _per_seed(rows)
    lines = []
    for alpha in sorted({r["alpha"] for r in rows}):
        if alpha == 1.0:
            continue
        ratio = estimate([r["lambda_max/lambda_max(1)"] for r in rows if r["alpha"] == alpha])
        lines.append(f"α = {alpha:g}: λmax(α) / λmax(1) = {ratio} over {ratio.n} seeds")
    adaptive = estimate([spread([r["adaptive_sharpness"] for r in rs]) for rs in seeds.values()])
    standard = estimate(
        [
            spread([r["standard_sharpness"] for r in rs])
            for rs in seeds.values()
            if all(r.get("standard_sharpness") is not None for r in rs)
        ]
    )
    acc = max(spread([r["test_acc"] for r in rs]) for rs in seeds.values())
    lines += [
        f"relative spread over α of adaptive sharpness: {adaptive}; of standard sharpness: "
        f"{standard}; of test accuracy, largest over seeds: {acc:.1e}",
        "λmax moves, adaptive sharpness does not (the function is the same): "
        + ("holds." if effect_holds(rows) else "does not hold."),
    ]
    return lines


def main() -> None:
    cli(
        __doc__,
        "Rescaling a ReLU MLP by α and 1/α ({dataset})",
        run,
        COLUMNS,
        report,
        quick_help="three values of α, three seeds, standard sharpness on the first seed only",
    )


if __name__ == "__main__":
    main()
