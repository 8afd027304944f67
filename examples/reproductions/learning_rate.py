"""Kaur, Cohen & Lipton 2022: larger learning rates give smaller λmax, and how that depends on
the batch size; Cohen et al. 2021: full-batch gradient descent trains at the edge of
stability, λmax ≈ 2/η.

Each network is trained with SGD (or full-batch GD) until its training loss is below
TARGET_LOSS, so all are compared at equal fit (the number of steps differs and is printed);
then the service measures λmax on the whole training set with dropout off and evaluates
train and test accuracy. `λmax·η/2` is the distance to the edge of stability 2/η (1 is the
edge). The rates are large enough that gradient descent reaches it.

Decided over the seeds (initial weights and minibatch order), each with its 95% interval:
- per batch size, the slope of log λmax on log η (per seed, then over seeds): "λmax falls as
  η grows" holds when the interval lies below 0;
- the batch-size interaction: the slope at the largest batch minus the slope at the smallest,
  and λmax at the largest batch over λmax at the smallest, at each common η;
- the edge: λmax·η/2 of full-batch GD at each η.

    python -m examples.reproductions.learning_rate [--quick] [--dataset mnist5k]
"""

from __future__ import annotations

import math

from examples.reproductions.common import (
    Split,
    cli,
    estimate,
    train_loss,
    trained_mlp,
)
from sharpness_client import Client

FULL = 0  # batch size 0: the whole training set (gradient descent)
GRID = {32: [0.1, 0.3, 1.0], 128: [0.1, 0.3, 1.0], FULL: [0.3, 0.6, 1.0]}
QUICK_GRID = {32: [0.1, 0.5], FULL: [0.5, 1.0]}
SEEDS = [0, 1, 2, 3, 4]
QUICK_SEEDS = [0, 1, 2]
TARGET_LOSS = 0.1
MAX_EPOCHS = {FULL: 3000}
DEFAULT_MAX_EPOCHS = 300
COLUMNS = [
    "batch_size",
    "lr",
    "seed",
    "steps",
    "train_loss",
    "lambda_max",
    "lambda_max*lr/2",
    "test_acc",
]
SUMMARY = ["batch_size", "lr", "seeds", "steps", "lambda_max", "lambda_max*lr/2", "test_acc"]


def _label(batch_size: int) -> str:
    return "full" if batch_size == FULL else str(batch_size)


def run(client: Client, data: Split, *, quick: bool = False) -> list[dict]:
    train_ref = client.datasets.from_arrays(data.x_train, data.y_train)
    test_ref = client.datasets.from_arrays(data.x_test, data.y_test)
    n = len(data.x_train)
    rows = []
    for batch_size, lrs in (QUICK_GRID if quick else GRID).items():
        size = n if batch_size == FULL else batch_size
        max_epochs = MAX_EPOCHS.get(batch_size, DEFAULT_MAX_EPOCHS)
        sgd = {"batch_size": size, "max_epochs": max_epochs, "target_loss": TARGET_LOSS}
        for lr in lrs:
            for seed in QUICK_SEEDS if quick else SEEDS:
                model, epochs = trained_mlp(data, seed, lr=lr, **sgd)
                loss = train_loss(model, data)
                row = {
                    "batch_size": _label(batch_size),
                    "lr": lr,
                    "seed": seed,
                    "steps": epochs * math.ceil(n / size),
                    "train_loss": loss,
                    "lambda_max": None,
                    "lambda_max*lr/2": None,
                    "test_acc": None,
                }
                if math.isfinite(loss) and loss <= TARGET_LOSS:
                    job = client.measure(
                        model,
                        train_ref,
                        ["lambda_max"],
                        params={"lambda_max": {"tol": 1e-5}},
                        example_inputs=data.x_train[:2],
                        eval_data=test_ref,
                        max_samples=n,
                        batch_size=n,
                        labels={"reproduction": "learning_rate"},
                    )
                    lam = job.results["lambda_max"].value
                    ev = job.evaluation or {}
                    row.update(
                        {
                            "lambda_max": lam,
                            "lambda_max*lr/2": lam * lr / 2,
                            "train_acc": ev.get("accuracy"),
                            "test_acc": (ev.get("test") or {}).get("accuracy"),
                        }
                    )
                rows.append(row)
    return rows


def _reached(rows: list[dict]) -> list[dict]:
    """The runs that reached the target loss (the others are listed, not compared)."""
    return [r for r in rows if r["lambda_max"] is not None]


def summary(rows: list[dict]) -> list[dict]:
    out = []
    cells: dict[tuple, list[dict]] = {}
    for r in _reached(rows):
        cells.setdefault((r["batch_size"], r["lr"]), []).append(r)
    for (bs, lr), rs in cells.items():
        out.append(
            {
                "batch_size": bs,
                "lr": lr,
                "seeds": len(rs),
                **{
                    c: str(estimate(vs))
                    if (vs := [r[c] for r in rs if r.get(c) is not None])
                    else None
                    for c in ("steps", "lambda_max", "lambda_max*lr/2", "test_acc")
                },
            }
        )
    return out


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log λmax on log η."""
    if len(points) < 2:
        return None
    xs = [math.log(p[0]) for p in points]
    ys = [math.log(p[1]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else None


def slopes(rows: list[dict]) -> dict[str, dict[int, float]]:
    """Per batch size, per seed: the slope of log λmax on log η over the rates it reached."""
    points: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for r in _reached(rows):
        points.setdefault(r["batch_size"], {}).setdefault(r["seed"], []).append(
            (r["lr"], r["lambda_max"])
        )
    out: dict[str, dict[int, float]] = {}
    for bs, per_seed in points.items():
        for seed, pts in per_seed.items():
            s = _slope(pts)
            if s is not None:
                out.setdefault(bs, {})[seed] = s
    return out


def effect_holds(rows: list[dict]) -> bool:
    """Within every batch size, the 95% interval over seeds of the slope of log λmax on log η
    lies below 0 (with one seed: the slope is below 0)."""
    found = slopes(rows)
    if not found or len(found) < len({r["batch_size"] for r in rows}):
        return False
    for per_seed in found.values():
        e = estimate(list(per_seed.values()))
        if not (e.high < 0 if e.n > 1 else e.mean < 0):
            return False
    return True


def report(rows: list[dict]) -> list[str]:
    lines = []
    missed = [r for r in rows if r["lambda_max"] is None]
    if missed:
        which = ", ".join(f"bs {r['batch_size']} η {r['lr']} seed {r['seed']}" for r in missed)
        lines.append(f"Did not reach training loss {TARGET_LOSS} (left out): {which}")
    found = slopes(rows)
    for bs, per_seed in found.items():
        e = estimate(list(per_seed.values()))
        verdict = "falls: holds" if e.n > 1 and e.high < 0 else "falls: does not hold"
        lines.append(f"batch {bs}: slope of log λmax on log η {e} over {e.n} seeds → {verdict}")
    sizes = [b for b in found if b != "full"]
    if "full" in found and sizes:
        small = min(sizes, key=int)
        common = sorted(set(found["full"]) & set(found[small]))
        if len(common) >= 2:
            diff = estimate([found["full"][s] - found[small][s] for s in common])
            lines.append(f"interaction: slope(full) − slope({small}) = {diff}")
        by = {(r["batch_size"], r["lr"], r["seed"]): r["lambda_max"] for r in _reached(rows)}
        for lr in sorted({r["lr"] for r in rows}):
            ratios = [
                by[("full", lr, s)] / by[(small, lr, s)]
                for s in {r["seed"] for r in rows}
                if ("full", lr, s) in by and (small, lr, s) in by
            ]
            if len(ratios) >= 2:
                lines.append(f"η {lr}: λmax(full) / λmax({small}) = {estimate(ratios)}")
    for r in summary(rows):
        if r["batch_size"] == "full":
            lines.append(f"edge of stability, GD at η {r['lr']}: λmax·η/2 = {r['lambda_max*lr/2']}")
    lines.append(
        "Larger learning rate → smaller λmax at every batch size: "
        + ("holds." if effect_holds(rows) else "does not hold.")
    )
    return lines


def main() -> None:
    cli(
        __doc__,
        "Learning rate vs λmax ({dataset}), every run",
        run,
        COLUMNS,
        report,
        quick_help="two batch sizes, two rates, 3 seeds",
        summary=(SUMMARY, summary),
    )


if __name__ == "__main__":
    main()
