"""The losses a measure can differentiate, over outputs of any layout, averaged over targets.

A dataset's objective is the mean loss over every *counted target* of the whole dataset:

    L(w) = (1 / M) · Σ_b Σ_{t ∈ counted(b)} ℓ(f(x)_t, y_t),     M = Σ_b m_b

where m_b is the number of counted targets of batch b. For a classifier with one label per
example m_b is the batch size; for a language model it is the number of token positions whose
label is not -100 (the "ignore this position" label of PyTorch and Hugging Face); for `mse` it
is the number of target elements. Batches are weighted by m_b / M, so a batch of padding
counts for nothing and the result does not depend on how the data was cut into batches.

Cross-entropy layouts, resolved from the shapes of outputs O and integer targets Y:
- O (N, C), Y (N,): the usual classifier.
- O (N, T, …, C), Y (N, T, …): classes last (the Hugging Face convention).
- O (N, C, T, …), Y (N, T, …): classes on dim 1 (the torch convention).
When both fit (C equals the last sequence dimension), the layout is ambiguous and refused
unless `class_dim` (1 or -1) says which. Float targets of the outputs' shape are class
probabilities (soft labels); beyond two dimensions they need `class_dim` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

LossName = Literal["cross_entropy", "mse"]
ClassDim = Literal[1, -1]

#: Targets equal to this are not counted (torch's and Hugging Face's convention).
IGNORE_INDEX = -100


class LayoutError(ValueError):
    """Outputs and targets do not fit the loss; the message names the shapes and the fix."""


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


@dataclass
class Objective:
    """A loss with its output layout: the per-batch mean over counted targets.

    `class_dim` is what the caller asked for (None: resolve from shapes); `resolved_dim` is
    what the first batch showed and every later batch must agree with.
    """

    name: LossName = "cross_entropy"
    class_dim: ClassDim | None = None
    resolved_dim: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ("cross_entropy", "mse"):
            raise ValueError(f"unknown loss {self.name!r}; expected 'cross_entropy' or 'mse'")
        if self.class_dim not in (None, 1, -1):
            raise ValueError(f"class_dim must be 1 or -1, got {self.class_dim!r}")

    # ------------------------------------------------------------------ counting
    def soft(self, targets: Tensor) -> bool:
        return self.name == "cross_entropy" and targets.is_floating_point()

    def count(self, targets: Tensor) -> int:
        """Number of counted targets in a batch, from the targets alone."""
        if self.name == "mse":
            return int(targets.numel())
        if self.soft(targets):
            if targets.ndim == 2:
                return int(targets.shape[0])
            if self.class_dim is None:
                raise LayoutError(
                    f"class-probability targets of shape {_shape(targets)} need class_dim "
                    "(1: classes on dim 1, torch's convention; -1: classes last)"
                )
            return int(targets.numel() // targets.shape[self.class_dim])
        return int((targets != IGNORE_INDEX).sum())

    # ------------------------------------------------------------------- layout
    def resolve(self, outputs: Tensor, targets: Tensor) -> int:
        """The class dimension of `outputs` (cross_entropy), checked against the targets."""
        if self.resolved_dim is not None:
            self._check_fits(outputs, targets, self.resolved_dim)
            return self.resolved_dim
        dim = self._resolve(outputs, targets)
        self.resolved_dim = dim
        return dim

    def _resolve(self, outputs: Tensor, targets: Tensor) -> int:
        o, y = _shape(outputs), _shape(targets)
        if outputs.ndim < 2:
            raise LayoutError(
                f"cross_entropy needs outputs with a class dimension; the model returns shape "
                f"{o}. For a regression model use loss 'mse'"
            )
        if self.soft(targets):
            if o != y:
                raise LayoutError(
                    f"class-probability targets of shape {y} must match the outputs {o}"
                )
            if outputs.ndim == 2:
                return -1
            assert self.class_dim is not None, "count() refuses these targets without class_dim"
            return int(self.class_dim)
        if outputs.ndim == 2:
            if y != o[:1]:
                raise LayoutError(
                    f"outputs {o} need one integer label per example, shape {o[:1]}; the "
                    f"targets have shape {y}"
                )
            return -1
        fits = {d for d in (-1, 1) if self._fits(o, y, d)}
        if self.class_dim is not None:
            if self.class_dim not in fits:
                raise LayoutError(
                    f"class_dim={self.class_dim} does not fit outputs {o} and targets {y}"
                )
            return self.class_dim
        if fits == {-1, 1}:
            raise LayoutError(
                f"outputs {o} and targets {y} fit both classes last (N, T, C) and classes on "
                "dim 1 (N, C, T); set class_dim to -1 (Hugging Face's convention) or 1 "
                "(torch's)"
            )
        if not fits:
            raise LayoutError(
                f"outputs {o} and targets {y} fit no layout: expected outputs (N, C) with "
                "targets (N,), (N, T, …, C) with targets (N, T, …), or (N, C, T, …) with "
                "targets (N, T, …)"
            )
        return fits.pop()

    @staticmethod
    def _fits(o: tuple[int, ...], y: tuple[int, ...], dim: int) -> bool:
        if len(o) != len(y) + 1:
            return False
        if dim == -1:
            return o[:-1] == y
        return o[0] == y[0] and o[2:] == y[1:]

    def _check_fits(self, outputs: Tensor, targets: Tensor, dim: int) -> None:
        if self.soft(targets) or outputs.ndim == 2:
            return
        if not self._fits(_shape(outputs), _shape(targets), dim):
            raise LayoutError(
                f"outputs {_shape(outputs)} and targets {_shape(targets)} do not fit the layout "
                f"of the first batch (classes on dim {dim})"
            )

    def num_classes(self, outputs: Tensor, targets: Tensor) -> int | None:
        if self.name != "cross_entropy":
            return None
        return int(outputs.shape[self.resolve(outputs, targets)])

    # -------------------------------------------------------------------- values
    def summed(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Σ of the loss over the batch's counted targets (differentiable)."""
        if self.name == "mse":
            if targets.numel() != outputs.numel():
                raise LayoutError(mse_shape_problem(outputs, targets))
            diff = outputs - targets.reshape(outputs.shape).to(outputs)
            return (diff * diff).sum()
        dim = self.resolve(outputs, targets)
        if dim == -1 and outputs.ndim > 2:  # (N, T, …, C) → (N·T·…, C)
            classes = outputs.shape[-1]
            outputs = outputs.reshape(-1, classes)
            targets = targets.reshape(-1, classes) if self.soft(targets) else targets.reshape(-1)
        if self.soft(targets):
            return nn.functional.cross_entropy(outputs, targets.to(outputs), reduction="sum")
        return nn.functional.cross_entropy(
            outputs, targets, ignore_index=IGNORE_INDEX, reduction="sum"
        )

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean over the batch's counted targets (0 when none is counted)."""
        return self.summed(outputs, targets) / max(self.count(targets), 1)

    def correct(self, outputs: Tensor, targets: Tensor) -> int:
        """Counted targets whose arg-max class is right (cross_entropy only)."""
        dim = self.resolve(outputs, targets)
        predicted = outputs.argmax(dim=dim)
        if self.soft(targets):
            return int((predicted == targets.argmax(dim=dim)).sum())
        counted = targets != IGNORE_INDEX
        return int(((predicted == targets) & counted).sum())

    def describe(self) -> dict[str, object]:
        """What the result states about how the loss was taken."""
        if self.name == "mse":
            return {"loss": "mse", "averaged_over": "every target element of the dataset"}
        where = {None: "unresolved", -1: "last", 1: "1"}[self.resolved_dim]
        return {
            "loss": "cross_entropy",
            "class_dim": where,
            "averaged_over": "every counted target of the dataset (labels -100 ignored)",
        }


def mse_shape_problem(outputs: Tensor, targets: Tensor) -> str:
    """Why `mse` cannot compare these outputs and targets, and the fix."""
    o, y = _shape(outputs), _shape(targets)
    fix = (
        "integer class labels go with loss 'cross_entropy'"
        if not targets.is_floating_point() or is_integral(targets)
        else "give targets of the outputs' shape, or pick the output with output_key"
    )
    return (
        f"loss 'mse' needs one target per output value: the model returns {o} per batch but "
        f"the targets have shape {y}; {fix} (or give targets of shape {o})"
    )


def label_range_problem(objective: Objective, classes: int | None, targets: Tensor) -> str | None:
    """Why integer labels cannot index the model's `classes` (None when they can)."""
    if objective.name != "cross_entropy" or objective.soft(targets):
        return None
    counted = targets[targets != IGNORE_INDEX]
    if counted.numel() == 0:
        return None
    low, high = int(counted.min()), int(counted.max())
    if low < 0:
        return f"hold the negative label {low}; only -100 (not counted) may be negative"
    if classes is not None and high >= classes:
        return (
            f"hold label {high} but the model has {classes} classes (labels 0..{classes - 1}); "
            "for real-valued targets use loss 'mse'"
        )
    return None


def is_integral(t: Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.equal(t, t.round()))
