"""Accuracy under Gaussian weight noise, and the search for the noise that costs a given drop.

Jiang et al. 2020 ("Fantastic Generalization Measures", §C/Algorithm 1) define PAC-Bayesian
flatness through σ*, the largest noise level whose expected train-accuracy drop is a target
d (0.1):

    acc(σ) = E_z acc(w + s(σ) ⊙ z),  z ~ N(0, I)
    σ*     = max { σ ∈ [0, σ_max] : acc(w) − acc(σ) ≤ d }

with s(σ) the per-weight standard deviation: σ·1 (isotropic) or √(σ²w² + ε²) (magnitude
aware). acc(σ) is estimated by Monte Carlo with `samples` draws and σ* found by bisection of
`depth` steps on [0, σ_max].

Common random numbers: every step of the bisection reuses the same draws z₁ … z_S (the
generator is re-seeded per step), so the estimate is a deterministic, almost monotone function
of σ and the bisection does not chase Monte Carlo noise from one step to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tasks.engine.problem import Batch, HessianProblem

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext


def require_classification(problem: HessianProblem, measure: str) -> None:
    """Accuracies and margins need class scores: refuse mse with a clear error."""
    if problem.loss_name != "cross_entropy":
        raise ValueError(
            f"{measure} needs a classifier (loss 'cross_entropy'); this job's loss is "
            f"{problem.loss_name!r}, which has no accuracy"
        )


def class_labels(targets: Tensor) -> Tensor:
    """Integer labels; class-probability targets (n, classes) give their argmax."""
    if targets.is_floating_point() and targets.ndim >= 2:
        return targets.argmax(dim=-1)
    return targets.long()


def subset(problem: HessianProblem, max_examples: int | None) -> list[Batch]:
    """The first `max_examples` examples in the problem's batches (all when None), in order,
    so two runs and two models see the same examples."""
    if max_examples is None:
        return list(problem.batches)
    out, have = [], 0
    for b in problem.batches:
        take = min(b.size, max_examples - have)
        if take <= 0:
            break
        out.append(b if take == b.size else b.slice(0, take))
        have += take
    return out


def accuracy(problem: HessianProblem, batches: Sequence[Batch]) -> float:
    """Share of examples whose largest output is the label, at the current weights."""
    correct, total = 0, 0
    with torch.no_grad():
        for b in batches:
            out = problem.batch_outputs(b)
            correct += int((out.argmax(dim=-1) == class_labels(b.targets)).sum())
            total += b.size
    return correct / total


def noisy_accuracies(
    problem: HessianProblem,
    batches: Sequence[Batch],
    std: Tensor,
    samples: int,
    seed: int,
) -> list[float]:
    """acc(w + std ⊙ z_s) for s = 1 … samples; z_s ~ N(0, I) drawn from a generator seeded
    with `seed`, so the same seed gives the same z_s whatever `std` is (common random numbers).
    Noise is drawn in float64 on the CPU, so results do not depend on the device."""
    gen = torch.Generator().manual_seed(seed)
    accs = []
    for _ in range(samples):
        z = torch.randn(problem.dim, generator=gen, dtype=torch.float64).to(problem.device)
        with problem.perturbed(std * z):
            accs.append(accuracy(problem, batches))
    return accs


@dataclass
class FlatnessSearch:
    sigma: float  # σ*: the noise level found
    accuracy: float  # estimated expected accuracy at σ*
    base_accuracy: float  # accuracy at w
    drop: float  # base_accuracy − accuracy
    iterations: int  # bisection steps
    reached: bool  # False: even σ_max costs less than the target drop
    examples: int
    history: list[dict[str, float]] = field(default_factory=list)


def flatness_search(
    problem: HessianProblem,
    std_of: Callable[[float], Tensor],
    target_drop: float = 0.1,
    sigma_max: float = 2.0,
    depth: int = 15,
    samples: int = 10,
    seed: int = 0,
    max_examples: int | None = None,
    ctx: MeasureContext | None = None,
) -> FlatnessSearch:
    """Bisection for σ* on [0, σ_max]: a step whose estimated drop exceeds the target moves
    the upper end down, otherwise the lower end up; σ* is the midpoint of the final bracket
    (width σ_max/2^depth), where the accuracy is estimated once more to report it."""
    batches = subset(problem, max_examples)
    base = accuracy(problem, batches)
    lo, hi = 0.0, sigma_max
    history: list[dict[str, float]] = []
    reached = False
    for i in range(depth):
        mid = 0.5 * (lo + hi)
        acc = sum(noisy_accuracies(problem, batches, std_of(mid), samples, seed)) / samples
        history.append({"sigma": mid, "accuracy": acc})
        if base - acc > target_drop:
            hi, reached = mid, True
        else:
            lo = mid
        if ctx is not None:
            ctx.step(i + 1, mid, accuracy=acc)
    sigma = 0.5 * (lo + hi)
    acc = sum(noisy_accuracies(problem, batches, std_of(sigma), samples, seed)) / samples
    return FlatnessSearch(
        sigma=sigma,
        accuracy=acc,
        base_accuracy=base,
        drop=base - acc,
        iterations=depth,
        reached=reached,
        examples=sum(b.size for b in batches),
        history=history,
    )


def isotropic_std(problem: HessianProblem) -> Callable[[float], Tensor]:
    """s(σ) = σ for every selected weight."""
    ones = torch.ones(problem.dim, dtype=torch.float64, device=problem.device)
    return lambda sigma: sigma * ones


def magnitude_std(problem: HessianProblem, eps: float) -> Callable[[float], Tensor]:
    """s(σ′)ᵢ = √(σ′² wᵢ² + ε²): a standard deviation. σ′²wᵢ² + ε² is the variance; passing
    the variance to the sampler as if it were the deviation is the mistake the closed-form test
    in docs/numerics.md (Tests of the numerics) catches."""
    w2 = problem.parameter_vector().double().pow(2)
    return lambda sigma: torch.sqrt(sigma * sigma * w2 + eps * eps)
