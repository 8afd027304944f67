"""Granziol 2020, "Flatness is a False Friend": weight decay gives sharper networks at equal
test accuracy.

Under cross-entropy, a low-loss solution with large weights has small Hessian measures, so
shrinking the weights (L2 regularisation) makes the minimum sharper while generalization
stays the same. Each network trains with SGD at one learning rate and batch size until its
training cross-entropy (without the penalty) is below TARGET_LOSS, so every network is
compared at equal training loss, not after equal epochs (a regularised net stopped early is
merely underfit). Only the weight decay differs; each decay is run with several seeds (initial
weights and minibatch order). The service measures λmax, the trace and ‖w‖ and evaluates
train and test accuracy.

The claim has two parts, each decided over the seeds, paired by seed:
- sharper: the 95% interval of λmax(decay) / λmax(no decay) lies above 1;
- equal test accuracy: an equivalence test (TOST) with margin ±ACCURACY_MARGIN on the
  test-accuracy difference; a difference that cannot be shown to be inside the margin is
  printed as "does not hold", whichever its sign.

    python -m examples.reproductions.weight_decay [--quick] [--dataset mnist5k]
"""

from __future__ import annotations

from examples.reproductions.common import (
    Split,
    cli,
    equivalence,
    estimate,
    train_loss,
    trained_mlp,
    weight_norm,
)
from sharpness_client import Client

DECAYS = [0.0, 1e-3, 3e-3]
QUICK_DECAYS = [0.0, 3e-3]
SEEDS = [0, 1, 2, 3, 4]
QUICK_SEEDS = [0, 1, 2]
LR, BATCH_SIZE = 0.1, 32
#: every network is trained to this training cross-entropy (equal fit); --quick stops earlier
TARGET_LOSS = 0.1
QUICK_TARGET_LOSS = 0.2
MAX_EPOCHS = 400
#: "equal test accuracy" means within ±1 point, shown by TOST at 5%
ACCURACY_MARGIN = 0.01
COLUMNS = [
    "weight_decay",
    "seed",
    "epochs",
    "train_loss",
    "weight_norm",
    "lambda_max",
    "trace",
    "test_acc",
]
SUMMARY = ["weight_decay", "seeds", "train_loss", "weight_norm", "lambda_max", "test_acc"]


def run(client: Client, data: Split, *, quick: bool = False) -> list[dict]:
    train_ref = client.datasets.from_arrays(data.x_train, data.y_train)
    test_ref = client.datasets.from_arrays(data.x_test, data.y_test)
    rows = []
    target = QUICK_TARGET_LOSS if quick else TARGET_LOSS
    sgd = {"lr": LR, "batch_size": BATCH_SIZE, "max_epochs": MAX_EPOCHS, "target_loss": target}
    for wd in QUICK_DECAYS if quick else DECAYS:
        for seed in QUICK_SEEDS if quick else SEEDS:
            model, epochs = trained_mlp(data, seed, weight_decay=wd, **sgd)
            measures = ["lambda_max"] if quick else ["lambda_max", "trace"]
            job = client.measure(
                model,
                train_ref,
                measures,
                params={"lambda_max": {"tol": 1e-5}, "trace": {"num_hvps": 60}}
                if not quick
                else {"lambda_max": {"tol": 1e-5}},
                example_inputs=data.x_train[:2],
                eval_data=test_ref,
                labels={"reproduction": "weight_decay"},
            )
            ev = job.evaluation or {}
            rows.append(
                {
                    "weight_decay": wd,
                    "seed": seed,
                    "epochs": epochs,
                    "train_loss": train_loss(model, data),
                    "weight_norm": weight_norm(model),
                    "lambda_max": job.results["lambda_max"].value,
                    "trace": job.results["trace"].value if "trace" in job.results else None,
                    "target_loss": target,
                    "train_acc": ev.get("accuracy"),
                    "test_acc": (ev.get("test") or {}).get("accuracy"),
                }
            )
    return rows


def _by_decay(rows: list[dict]) -> dict[float, dict[int, dict]]:
    out: dict[float, dict[int, dict]] = {}
    for r in rows:
        out.setdefault(r["weight_decay"], {})[r["seed"]] = r
    return out


def summary(rows: list[dict]) -> list[dict]:
    """Per decay: the mean and 95% interval over seeds of each column."""
    out = []
    for wd, runs in sorted(_by_decay(rows).items()):
        rs = list(runs.values())
        out.append(
            {
                "weight_decay": wd,
                "seeds": len(rs),
                **{
                    c: str(estimate([r[c] for r in rs]))
                    for c in ("train_loss", "weight_norm", "lambda_max", "test_acc")
                },
            }
        )
    return out


def comparison(rows: list[dict]) -> dict:
    """The largest decay against none, paired by seed: the λmax ratio's interval, the TOST on
    the test-accuracy difference, and whether every run reached the target loss."""
    by = _by_decay(rows)
    none, most = by[min(by)], by[max(by)]
    seeds = sorted(set(none) & set(most))
    return {
        "decay": max(by),
        "seeds": seeds,
        "target": max(r.get("target_loss", TARGET_LOSS) for r in rows),
        "equal_fit": all(r["train_loss"] <= r.get("target_loss", TARGET_LOSS) for r in rows),
        "ratio": estimate([most[s]["lambda_max"] / none[s]["lambda_max"] for s in seeds]),
        "accuracy": equivalence(
            [most[s]["test_acc"] - none[s]["test_acc"] for s in seeds], ACCURACY_MARGIN
        ),
    }


def effect_holds(rows: list[dict]) -> bool:
    """Sharper (the λmax ratio's interval above 1) and equal test accuracy (TOST), with every
    network at the target training loss."""
    c = comparison(rows)
    return c["equal_fit"] and c["ratio"].low > 1.0 and c["accuracy"].equal


def report(rows: list[dict]) -> list[str]:
    c = comparison(rows)
    sharper = c["ratio"].low > 1.0
    lines = [
        f"At equal training loss (< {c['target']:g}): "
        + ("every run reached it" if c["equal_fit"] else "NOT every run reached it"),
        f"λmax(decay {c['decay']:g}) / λmax(none), over seeds {c['seeds']}: {c['ratio']} → "
        + ("sharper: holds" if sharper else "sharper: does not hold"),
        f"Test accuracy: {c['accuracy']} → "
        + ("equal accuracy: holds" if c["accuracy"].equal else "equal accuracy: does not hold"),
        "Weight decay → larger λmax at equal test accuracy: "
        + ("holds." if effect_holds(rows) else "does not hold."),
    ]
    return lines


def main() -> None:
    cli(
        __doc__,
        "Weight decay vs sharpness ({dataset}), every run",
        run,
        COLUMNS,
        report,
        quick_help=f"two decays, three seeds, λmax only, trained to loss {QUICK_TARGET_LOSS}",
        summary=(SUMMARY, summary),
    )


if __name__ == "__main__":
    main()
