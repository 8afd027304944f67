"""Granziol 2020, "Flatness is a False Friend": weight decay gives sharper networks at equal
test accuracy.

Under cross-entropy, a low-loss solution with large weights has small Hessian measures, so
shrinking the weights (L2 regularisation) makes the minimum sharper while generalization
stays the same or improves. Each network trains with SGD for the same number of epochs at one
learning rate and batch size; only the weight decay differs. The service measures λmax, the
trace and ‖w‖ and evaluates train and test accuracy.

    python -m examples.reproductions.weight_decay [--quick] [--dataset mnist5k]
"""

from __future__ import annotations

import argparse

from examples.reproductions.common import (
    DATASETS,
    Split,
    mlp,
    print_table,
    train_sgd,
    weight_norm,
)
from sharpness_client import Client

DECAYS = [0.0, 1e-3, 3e-3, 1e-2]
QUICK_DECAYS = [0.0, 1e-2]
COLUMNS = ["weight_decay", "weight_norm", "lambda_max", "trace", "train_acc", "test_acc"]
EPOCHS, QUICK_EPOCHS = 100, 40
#: "equal test accuracy": the published effect needs the sharper nets to be no worse than this
ACCURACY_TOLERANCE = 0.02


def run(client: Client, data: Split, *, quick: bool = False) -> list[dict]:
    train_ref = client.datasets.from_arrays(data.x_train, data.y_train)
    test_ref = client.datasets.from_arrays(data.x_test, data.y_test)
    rows = []
    for wd in QUICK_DECAYS if quick else DECAYS:
        model = mlp(data.features)
        epochs = QUICK_EPOCHS if quick else EPOCHS
        train_sgd(model, data, lr=0.1, batch_size=32, weight_decay=wd, max_epochs=epochs)
        job = client.measure(
            model,
            train_ref,
            ["lambda_max", "trace"],
            params={"lambda_max": {"tol": 1e-5}, "trace": {"num_hvps": 100}},
            example_inputs=data.x_train[:2],
            eval_data=test_ref,
            labels={"reproduction": "weight_decay"},
        )
        ev = job.evaluation or {}
        rows.append(
            {
                "weight_decay": wd,
                "weight_norm": weight_norm(model),
                "lambda_max": job.results["lambda_max"].value,
                "trace": job.results["trace"].value,
                "train_acc": ev.get("accuracy"),
                "test_acc": (ev.get("test") or {}).get("accuracy"),
            }
        )
    return rows


def effect_holds(rows: list[dict]) -> bool:
    """The largest decay gives a larger λmax than none, at a test accuracy no worse than
    ACCURACY_TOLERANCE below it."""
    rows = sorted(rows, key=lambda r: r["weight_decay"])
    none, most = rows[0], rows[-1]
    sharper = most["lambda_max"] > none["lambda_max"]
    return sharper and most["test_acc"] >= none["test_acc"] - ACCURACY_TOLERANCE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two decays, fewer epochs")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    args = ap.parse_args()
    with Client() as client:
        rows = run(client, DATASETS[args.dataset](), quick=args.quick)
    print_table(f"Weight decay vs sharpness ({args.dataset})", COLUMNS, rows)
    verdict = "holds" if effect_holds(rows) else "does NOT hold"
    print(f"\nWeight decay → larger λmax at equal test accuracy: {verdict}.")


if __name__ == "__main__":
    main()
