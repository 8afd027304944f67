"""What a study needs from each member's job record: its state, gap and feature values.

Gap (the study's target), first match wins:
    accuracy_gap = evaluation.accuracy − test_accuracy given with the study
                 | evaluation.gap.accuracy  (measured on the job's eval_dataset)
    loss_gap     = test_loss given with the study − evaluation.loss
                 | evaluation.gap.loss
A succeeded job with neither is a model to predict.

Measures: every result whose `value` is a finite number (lists such as top_eigenvalues are
left out), except weight_norms, whose ‖w‖ is a baseline.

Noise of an accuracy gap: the test accuracy is a mean over the test set's examples, so with
n_test = evaluation.test.num_examples it carries a binomial standard error
√(p(1 − p)/n_test), p the test accuracy. (The train accuracy is the model's accuracy on the
very set it was trained on, not a sample of it, and adds none.) A loss gap has no such
formula without the per-example losses, so it gets none.
"""

from __future__ import annotations

import math
from typing import Any

from tasks.contract.spec import Job, JobStatus
from tasks.studies.baselines import WEIGHT_NORMS_MEASURE, baseline_values
from tasks.studies.results import MemberData, MemberEntry, Target


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def observed_gap(
    entry: MemberEntry, evaluation: dict[str, Any] | None, target: Target
) -> tuple[float | None, str | None]:
    """The member's gap and where it came from (module docstring), or (None, None)."""
    ev = evaluation or {}
    given = ev.get("gap")
    measured: dict[str, Any] = given if isinstance(given, dict) else {}
    if target == "accuracy_gap":
        train = _number(ev.get("accuracy"))
        if entry.test_accuracy is not None and train is not None:
            return train - entry.test_accuracy, "train accuracy − the test_accuracy given"
        gap = _number(measured.get("accuracy"))
        return (gap, "measured on the job's eval_dataset") if gap is not None else (None, None)
    train = _number(ev.get("loss"))
    if entry.test_loss is not None and train is not None:
        return entry.test_loss - train, "the test_loss given − train loss"
    gap = _number(measured.get("loss"))
    return (gap, "measured on the job's eval_dataset") if gap is not None else (None, None)


def gap_noise(
    entry: MemberEntry, evaluation: dict[str, Any] | None, target: Target
) -> tuple[float | None, int | None]:
    """The binomial standard error of an accuracy gap and the test-set size it rests on
    (module docstring), or (None, None) when the size is not known."""
    ev = evaluation or {}
    given = ev.get("test")
    test: dict[str, Any] = given if isinstance(given, dict) else {}
    size = test.get("num_examples")
    if target != "accuracy_gap" or isinstance(size, bool) or not isinstance(size, int):
        return None, None
    if size <= 0:
        return None, None
    p = entry.test_accuracy if entry.test_accuracy is not None else _number(test.get("accuracy"))
    if p is None:
        return None, size
    return math.sqrt(max(p * (1.0 - p), 0.0) / size), size


def member_data(entry: MemberEntry, job: Job | None, target: Target) -> MemberData:
    hps = dict(entry.hyperparameters)
    model = job.spec.model if job is not None else None
    if job is None:
        return MemberData(entry.job, hps, "missing", group=entry.group)
    if job.status in (JobStatus.queued, JobStatus.running):
        return MemberData(entry.job, hps, "waiting", model=model, group=entry.group)
    if job.status != JobStatus.succeeded:
        return MemberData(entry.job, hps, "failed", model=model, group=entry.group)
    measures = {
        name: v
        for name, result in job.results.items()
        if name != WEIGHT_NORMS_MEASURE and (v := _number(result.value)) is not None
    }
    norms = job.results.get(WEIGHT_NORMS_MEASURE)
    gap, source = observed_gap(entry, job.evaluation, target)
    se, size = gap_noise(entry, job.evaluation, target)
    return MemberData(
        job=entry.job,
        hyperparameters=hps,
        state="observed" if gap is not None else "to_predict",
        gap=gap,
        gap_source=source,
        measures=measures,
        baselines=baseline_values(hps, norms.value if norms is not None else None),
        model=model,
        group=entry.group,
        noise_se=se,
        test_examples=size,
    )
