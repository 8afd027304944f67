"""Loss and accuracy of a model on its data, before any measure: the training data's, and a
job's held-out data (`eval_dataset`, loaded and checked like the training data and only
evaluated: it never enters a measure) with the generalization gap between them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.contract.spec import Job
from tasks.engine.cancel import Cancelled, cancellable
from tasks.worker.errors import STOPS, LoadError, at, first_line
from tasks.worker.loaders import LoadedModel
from tasks.worker.loading import Stored, load_batches, make_problem


def evaluate(
    problem_: Any, name: str, should_cancel: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Loss and accuracy over `problem_`'s data; a cancel (`should_cancel`) is heard before
    every batch's forward pass, as in a measure."""
    try:
        with cancellable(should_cancel):
            ev: dict[str, Any] = problem_.evaluate()
    except Cancelled:
        raise  # the run stops (a cancel, the worker draining, ...): not the data's fault
    except STOPS:
        raise
    except Exception as e:
        msg = first_line(e)
        raise LoadError(
            "Data does not fit the model",
            f"{name}: computing the loss failed ({msg}); check the targets' shape and range "
            "against the model's outputs",
        ) from e
    ev["mode"] = problem_.mode
    if problem_.mode_note:
        ev["mode_note"] = problem_.mode_note
    ev["num_examples"] = problem_.num_examples
    ev["num_targets"] = problem_.num_targets
    return ev


def held_out_evaluation(
    rt: Stored,
    job: Job,
    model: LoadedModel,
    device: str,
    should_cancel: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Loss and accuracy on `eval_dataset` at the same weights (None without one). Its
    problem is dropped at once: held-out data is evaluated, never measured."""
    spec = job.spec
    if spec.eval_dataset is None:
        return None
    try:
        batches = load_batches(rt, job, model, spec.eval_dataset, "eval_dataset")
    except LoadError as e:
        raise e if e.detail.startswith("eval_dataset") else at("eval_dataset", e) from e
    held_out = make_problem(job.spec, model.module, batches, device)
    ev = evaluate(held_out, "eval_dataset", should_cancel)
    return {"loss": ev["loss"], "accuracy": ev["accuracy"], "num_examples": ev["num_examples"]}


def with_gap(train: dict[str, Any], test: dict[str, Any] | None) -> dict[str, Any]:
    """`evaluation` with 'test' and 'gap' (accuracy: train − test; loss: test − train), the
    accuracy gap only where there is an accuracy (cross_entropy)."""
    if test is None:
        return train
    gap: dict[str, float] = {}
    if train.get("accuracy") is not None and test.get("accuracy") is not None:
        gap["accuracy"] = train["accuracy"] - test["accuracy"]
    gap["loss"] = test["loss"] - train["loss"]
    return {**train, "test": test, "gap": gap}
