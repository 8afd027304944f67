"""Kaur, Cohen & Lipton 2022: larger learning rates give smaller λmax, at every batch size.

Each network is trained with SGD until its training loss is below 0.05 (so all are compared at
equal fit), then the service measures λmax on the first 1000 training examples with dropout
off, as in the paper, and evaluates train and test accuracy. The published finding is the
direction: within a batch size, λmax falls as η grows. The paper also finds the test-accuracy
benefit of a large η can vanish at large batch: read the `gap` column with that in mind, and
`λmax·η/2` (above 1 would be beyond the edge of stability 2/η).

    python -m examples.reproductions.learning_rate [--quick] [--dataset mnist5k]
"""

from __future__ import annotations

import argparse

from examples.reproductions.common import DATASETS, Split, mlp, print_table, train_sgd
from sharpness_client import Client

GRID = {32: [0.01, 0.03, 0.1, 0.3], 128: [0.03, 0.1, 0.3, 1.0]}
QUICK_GRID = {32: [0.03, 0.1, 0.3]}
COLUMNS = ["batch_size", "lr", "epochs", "lambda_max", "lambda_max*lr/2", "train_acc", "test_acc"]


def run(client: Client, data: Split, *, quick: bool = False) -> list[dict]:
    train_ref = client.datasets.from_arrays(data.x_train, data.y_train)
    test_ref = client.datasets.from_arrays(data.x_test, data.y_test)
    rows = []
    for batch_size, lrs in (QUICK_GRID if quick else GRID).items():
        for lr in lrs:
            model = mlp(data.features)
            epochs = train_sgd(
                model, data, lr=lr, batch_size=batch_size, max_epochs=400, target_loss=0.05
            )
            job = client.measure(
                model,
                train_ref,
                ["lambda_max"],
                params={"lambda_max": {"tol": 1e-5}},
                example_inputs=data.x_train[:2],
                eval_data=test_ref,
                max_samples=1000,
                batch_size=1000,
                labels={"reproduction": "learning_rate"},
            )
            lam = job.results["lambda_max"].value
            ev = job.evaluation or {}
            rows.append(
                {
                    "batch_size": batch_size,
                    "lr": lr,
                    "epochs": epochs,
                    "lambda_max": lam,
                    "lambda_max*lr/2": lam * lr / 2,
                    "train_acc": ev.get("accuracy"),
                    "test_acc": (ev.get("test") or {}).get("accuracy"),
                }
            )
    return rows


def effect_holds(rows: list[dict]) -> bool:
    """Within every batch size, λmax strictly decreases as the learning rate increases."""
    for bs in {r["batch_size"] for r in rows}:
        lams = [
            r["lambda_max"] for r in sorted(rows, key=lambda r: r["lr"]) if r["batch_size"] == bs
        ]
        if any(b >= a for a, b in zip(lams, lams[1:], strict=False)):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one batch size, three rates")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    args = ap.parse_args()
    with Client() as client:
        rows = run(client, DATASETS[args.dataset](), quick=args.quick)
    print_table(f"Learning rate vs λmax ({args.dataset})", COLUMNS, rows)
    verdict = "holds" if effect_holds(rows) else "does NOT hold"
    print(f"\nLarger learning rate → smaller λmax at every batch size: {verdict}.")


if __name__ == "__main__":
    main()
