"""Adaptive and standard sharpness, worst case (Auto-PGD) and average case.

With weights w, loss L and a scale c (adaptive: c = |w| + η; standard: c = 1),

    worst case     S = max_{‖δ ⊘ c‖_p ≤ ρ} L(w + δ) − L(w)
    average case   S = E_δ L(w + δ) − L(w),   δ = ρ·c ⊙ N(0, I) (ℓ2) or ρ·c ⊙ U(−1, 1) (ℓ∞)

(Kwon et al. 2021; Andriushchenko et al. 2023). The data is cut into chunks of m examples
(m-sharpness); S is maximised (or averaged) on each chunk separately and the mean over chunks
is reported, with the 0-1 error increase at the same perturbations.

The maximisation runs in normalised coordinates z = δ ⊘ c, where the constraint is the round
ball ‖z‖_p ≤ ρ: ∇_z = c ⊙ ∇_δ L, the ℓ∞ projection is a clamp to [−ρ, ρ] and the ℓ2 projection
a rescale — exact, where a projection onto the ellipsoid in δ needs a bisection. The feasible
set is the same, so the measure is the same. Because z is invariant under the rescalings that
leave a ReLU network's function unchanged (layer k by α, layer k+1 by 1/α), every iterate is
too, and adaptive sharpness is invariant to rounding error (Dinh et al. 2017).

Auto-PGD (Croce and Hein 2020): first step 2ρ, ascent direction sign(∇_z) (ℓ∞) or
∇_z/‖∇_z‖ (ℓ2), momentum 0.75 on the projected step, and at checkpoints p₀ = 0, p₁ = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (fractions of the run) the step is halved
(`halve_at_checkpoint`) when

  (1) fewer than ρ = 75% of the steps since the previous checkpoint w_{j−1} increased the
      loss, or
  (2) the step size in force at w_{j−1} equals the one at w_j — no halving at w_{j−1} — and
      the best loss at w_{j−1} equals the best at w_j (no progress at an unchanged step);

the iterate then restarts from the best point found. "The step size at w_j" is the one used on
the iterations that lead up to w_j, before the decision taken there (as in the reference
code, where (2) reads "not reduced at the last check and no better loss since it"); at w₁ the
previous checkpoint is the start, where no halving happened.
Two defects of the reference implementation are avoided: the random start is applied (there a
stray comma made it a tuple that was never used), and after a halving the perturbation itself
is reset to the best point (there only the model's weights were, so the next step started
from a stale perturbation).

Interval and rounding: `ci95` is the mean ± (t·se + rounding level), se the standard error
across chunks (t with chunks − 1 degrees of freedom; none from one chunk). A loss increase
L(w + δ) − L(w) is a difference of two losses computed in the model's dtype, and at small ρ it
can be as small as their rounding. The rounding is measured: each chunk's loss is evaluated
once more at w and at its perturbation with every weight jittered by about two units in its
last place (j = 2·eps·|w| ⊙ U(−1, 1), a separate generator, so the estimate itself is
unchanged), and |L̃(x) − L̃(x + j)| shows both the forward pass's rounding (another weight
rounds another way) and the loss's sensitivity to rounding the weights. The level is

    rounding level = ROUNDING_FACTOR · (max over chunks of (m₀ + m₁) + eps · mean(|L₀| + |L₁|))

with m₀, m₁ the measured jitters at w and at the perturbation (the largest chunk's, since one
draw of a rounding can be small by chance) and eps·|L| the rounding of storing the loss. The
interval covers the chunk sampling and the rounding; for the worst case it does not cover the
maximisation's gap (Auto-PGD's value is a lower bound on the maximum).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from tasks.engine.precision import ROUNDING_FACTOR
from tasks.engine.problem import Batch, HessianProblem
from tasks.engine.trace.common import t_quantile

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

Norm = Literal["linf", "l2"]
MOMENTUM = 0.75
IMPROVEMENT_FRACTION = 0.75
#: the jitter that measures the losses' rounding draws from seed + this (not the probes' stream)
JITTER_SEED_OFFSET = 7919


@dataclass
class SharpnessEstimate:
    value: float  # mean loss increase over chunks
    error_increase: float | None  # mean 0-1 error increase (classification only)
    std_error: float | None  # across chunks (worst case) or draws×chunks (average case)
    per_chunk: list[float]
    chunks: int
    examples: int
    loss: float  # mean chunk loss at w
    gradients: int  # loss gradients evaluated (worst case) or forward passes (average)
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    rounding_level: float = 0.0  # absolute, in the loss's units; see the module docstring
    ci95: tuple[float, float] | None = None  # mean ± (t·se + rounding level)


def checkpoints(iterations: int) -> list[int]:
    """Auto-PGD's step-size checkpoints as iteration indices (strictly increasing, > 0)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    marks = sorted({math.ceil(q * iterations - 1e-9) for q in p[1:] if q <= 1})
    return [m for m in marks if 0 < m < iterations]


def scale_vector(problem: HessianProblem, adaptive: bool, eta: float) -> Tensor:
    """c: |w| + η for adaptive sharpness, ones for standard sharpness (float64, flat)."""
    w = problem.parameter_vector().double()
    return w.abs() + eta if adaptive else torch.ones_like(w)


def project(z: Tensor, rho: float, norm: Norm) -> Tensor:
    """Euclidean projection onto the ball ‖z‖_p ≤ ρ."""
    if norm == "linf":
        return z.clamp(-rho, rho)
    n = float(z.norm())
    return z if n <= rho else z * (rho / n)


def _direction(g: Tensor, norm: Norm) -> Tensor:
    if norm == "linf":
        return g.sign()
    n = float(g.norm())
    return g / n if n > 0 else g


def _random_start(dim: int, rho: float, norm: Norm, gen: torch.Generator) -> Tensor:
    """Uniform in the ℓ∞ ball; for ℓ2 a uniform direction at a uniform-in-ball radius."""
    if norm == "linf":
        return (torch.rand(dim, generator=gen, dtype=torch.float64) * 2 - 1) * rho
    u = torch.randn(dim, generator=gen, dtype=torch.float64)
    r = rho * float(torch.rand(1, generator=gen, dtype=torch.float64)) ** (1.0 / dim)
    return u / u.norm() * r


def chunks_of(problem: HessianProblem, m: int, num_batches: int) -> list[Batch]:
    """The first m·num_batches examples, in order, cut into chunks of m (the last may be short).

    Deterministic, so two runs (or two rescaled copies of a model) see the same chunks.
    """
    want = m * num_batches
    parts, have = [], 0
    for b in problem.batches:
        take = min(b.size, want - have)
        parts.append(b.slice(0, take))
        have += take
        if have >= want:
            break
    whole = Batch.concat(parts)
    return [whole.slice(i, i + m) for i in range(0, have, m)]


class _ChunkObjective:
    """Loss and 0-1 error of one chunk at w + c ⊙ z, and the gradient with respect to z."""

    def __init__(self, problem: HessianProblem, chunk: Batch, c: Tensor) -> None:
        self.p, self.chunk, self.c = problem, chunk, c
        self.gradients = 0

    def _delta(self, z: Tensor) -> Tensor:
        return self.c * z

    def value(self, z: Tensor, jitter: Tensor | None = None) -> tuple[float, float | None]:
        """Loss and 0-1 error at w + c ⊙ z (+ `jitter`, added to the weights as it is)."""
        delta = self._delta(z) if jitter is None else self._delta(z) + jitter
        with self.p.perturbed(delta), torch.no_grad():
            out = self.p.batch_outputs(self.chunk)
            loss = float(self.p.loss_fn(out, self.chunk.targets).double())
        err = None
        if self.p.loss_name == "cross_entropy":
            err = float((out.argmax(dim=-1) != self.chunk.targets).double().mean())
        return loss, err

    def value_and_grad(self, z: Tensor) -> tuple[float, Tensor]:
        with self.p.perturbed(self._delta(z)):
            loss = self.p.batch_loss(self.chunk)
            grads = torch.autograd.grad(loss, self.p.params, allow_unused=True)
        self.gradients += 1
        flat = self.p.flatten(
            [
                torch.zeros_like(q) if g is None else g
                for g, q in zip(grads, self.p.params, strict=True)
            ]
        ).double()
        return float(loss.detach().double()), self.c * flat


def halve_at_checkpoint(
    increases: int,
    steps: int,
    step_at_previous: float,
    step_now: float,
    best_at_previous: float,
    best_now: float,
    rho: float = IMPROVEMENT_FRACTION,
) -> bool:
    """Croce & Hein 2020's step-size rule at checkpoint w_j.

    increases: steps i in [w_{j−1}, w_j) with f(x_{i+1}) > f(x_i); steps = w_j − w_{j−1};
    step_at_previous / step_now: the step size in force at w_{j−1} and at w_j (both before
    any halving at w_j); best_at_previous / best_now: the best value found by w_{j−1} / w_j.
    Halve when (1) increases < ρ·steps, or (2) the step size and the best value are both
    unchanged since w_{j−1}."""
    if steps <= 0:
        raise ValueError(f"checkpoints must be increasing, got an interval of {steps} steps")
    few_increases = increases < rho * steps
    stalled = step_at_previous == step_now and best_at_previous == best_now
    return few_increases or stalled


def apgd(
    objective: _ChunkObjective,
    dim: int,
    rho: float,
    norm: Norm,
    iterations: int,
    gen: torch.Generator,
    ctx: MeasureContext | None = None,
    progress: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    schedule: list[dict[str, Any]] | None = None,
) -> tuple[Tensor, float]:
    """Maximise the chunk loss over ‖z‖_p ≤ ρ; returns the best z and its loss.

    `schedule`, when a list, receives one record per checkpoint: the iteration, the step in
    force, the increases and steps counted, the best value, and whether the step was halved."""
    marks = set(checkpoints(iterations))
    step = 2.0 * rho
    x = project(_random_start(dim, rho, norm, gen).to(device), rho, norm)
    f, g = objective.value_and_grad(x)
    best_x, best_f = x.clone(), f
    x_prev = x.clone()
    improved, last_mark = 0, 0
    # the step in force at the previous checkpoint (before its decision) and the best value
    # there; the start counts as checkpoint w₀
    step_at_mark, best_at_mark = step, best_f
    for k in range(iterations):
        z = project(x + step * _direction(g, norm), rho, norm)
        if k == 0:
            x_new = z
        else:
            x_new = project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev), rho, norm)
        f_new, g_new = objective.value_and_grad(x_new)
        if f_new > f:
            improved += 1
        x_prev, x, f, g = x, x_new, f_new, g_new
        if f > best_f:
            best_x, best_f = x.clone(), f
        if ctx is not None and progress is not None:
            progress["iteration"] += 1
            ctx.step(progress["iteration"], best_f, chunk=progress.get("chunk"))
        if k + 1 in marks:
            step_in_force = step
            halve = halve_at_checkpoint(
                improved, k + 1 - last_mark, step_at_mark, step_in_force, best_at_mark, best_f
            )
            if schedule is not None:
                schedule.append(
                    {
                        "iteration": k + 1,
                        "step": step_in_force,
                        "increases": improved,
                        "steps": k + 1 - last_mark,
                        "best": best_f,
                        "halved": halve,
                    }
                )
            if halve:
                step /= 2.0
                # restart from the best point: the perturbation itself, and its momentum
                x, x_prev, f = best_x.clone(), best_x.clone(), best_f
                _, g = objective.value_and_grad(x)
            improved, last_mark = 0, k + 1
            step_at_mark, best_at_mark = step_in_force, best_f
    return best_x, best_f


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    t = torch.tensor(values, dtype=torch.float64)
    if len(values) < 2:
        return float(t.mean()), None
    return float(t.mean()), float(t.std(unbiased=True)) / math.sqrt(len(values))


@dataclass
class _Search:
    """How each chunk's perturbations are found: the ball (`norm`, `rho`), APGD's
    `iterations` and `restarts` (worst case) or the `samples` drawn (average case), the
    generator they draw from, and where progress goes."""

    dim: int
    device: torch.device | str
    norm: Norm
    rho: float
    iterations: int
    restarts: int
    samples: int
    gen: torch.Generator
    ctx: MeasureContext | None
    progress: dict[str, Any] = field(default_factory=lambda: {"iteration": 0})


@dataclass
class _ChunkResult:
    """One chunk's loss increase (and error increase), at the perturbation `z` whose loss is
    `loss` (worst case: the maximiser; average case: the first draw), and the work it took."""

    increase: float
    error_increase: float | None
    z: Tensor
    loss: float
    work: int


def _worst_chunk(
    obj: _ChunkObjective, zero: Tensor, loss0: float, err0: float | None, search: _Search
) -> _ChunkResult:
    """The largest loss APGD finds in the ball, the best of `restarts` runs."""
    best_z, best_f = zero, loss0
    for _ in range(search.restarts):
        z, f_z = apgd(
            obj,
            search.dim,
            search.rho,
            search.norm,
            search.iterations,
            search.gen,
            search.ctx,
            search.progress,
            search.device,
        )
        if f_z > best_f:
            best_z, best_f = z, f_z
    loss1, err1 = obj.value(best_z)  # re-evaluated without the graph
    err = err1 - err0 if err0 is not None and err1 is not None else None
    return _ChunkResult(loss1 - loss0, err, best_z, loss1, obj.gradients)


def _average_chunk(
    obj: _ChunkObjective, loss0: float, err0: float | None, search: _Search, chunk: int
) -> _ChunkResult:
    """The mean loss increase over `samples` uniform draws from the ball."""
    dim, gen, ctx = search.dim, search.gen, search.ctx
    increases: list[float] = []
    errors: list[float] = []
    first: tuple[Tensor, float] | None = None
    for _ in range(search.samples):
        if search.norm == "l2":
            z = search.rho * torch.randn(dim, generator=gen, dtype=torch.float64)
        else:
            z = search.rho * (torch.rand(dim, generator=gen, dtype=torch.float64) * 2 - 1)
        z = z.to(search.device)
        loss1, err1 = obj.value(z)
        if first is None:
            first = (z, loss1)
        increases.append(loss1 - loss0)
        if err0 is not None and err1 is not None:
            errors.append(err1 - err0)
        if ctx is not None:
            search.progress["iteration"] += 1
            ctx.step(search.progress["iteration"], sum(increases) / len(increases), chunk=chunk)
    assert first is not None, "samples must be at least 1"
    err = sum(errors) / len(errors) if errors else None
    return _ChunkResult(sum(increases) / len(increases), err, first[0], first[1], len(increases))


def _interval(
    value: float, increases: list[float], level: float
) -> tuple[float | None, tuple[float, float] | None]:
    """The chunks' standard error and the 95% interval around `value`, widened by the
    rounding level; None for both with a single chunk."""
    _, se = _mean_se(increases)
    if se is None:
        return None, None
    half = t_quantile(len(increases)) * se + level
    return se, (value - half, value + half)


def _weight_jitter(problem: HessianProblem, seed: int, eps: float) -> Callable[[], Tensor]:
    """Draws of a change of every weight in its last places (uniform in ±2·eps·|w|), from a
    generator of their own so that the perturbations' draws do not depend on them."""
    gen = torch.Generator().manual_seed(seed + JITTER_SEED_OFFSET)
    w_abs = problem.parameter_vector().double().abs()

    def jitter() -> Tensor:
        u = torch.rand(problem.dim, generator=gen, dtype=torch.float64) * 2 - 1
        return (2 * eps * w_abs.cpu() * u).to(problem.device)

    return jitter


def sharpness(
    problem: HessianProblem,
    kind: Literal["worst", "average"] = "worst",
    norm: Norm = "linf",
    adaptive: bool = True,
    rho: float = 2e-3,
    eta: float = 0.0,
    m: int = 128,
    num_batches: int = 8,
    iterations: int = 20,
    restarts: int = 1,
    samples: int = 10,
    seed: int = 0,
    ctx: MeasureContext | None = None,
    keep_perturbations: bool = False,
) -> SharpnessEstimate:
    """Worst- or average-case (adaptive) sharpness, averaged over chunks of m examples, with
    its 95% interval including the losses' rounding (see the module docstring).
    `keep_perturbations`: details["perturbations"] holds each chunk's z (worst case: the
    maximiser; average case: the first draw)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    c = scale_vector(problem, adaptive, eta)
    dim, device = problem.dim, problem.device
    chunks = chunks_of(problem, m, num_batches)
    increases: list[float] = []
    error_increases: list[float] = []
    base_losses: list[float] = []
    eps = float(torch.finfo(problem.dtype).eps)
    jitter = _weight_jitter(problem, seed, eps)
    search = _Search(dim, device, norm, rho, iterations, restarts, samples, gen, ctx)
    measured, stored, kept = [], [], []
    work = 0
    for i, chunk in enumerate(chunks):
        obj = _ChunkObjective(problem, chunk, c)
        zero = torch.zeros(dim, dtype=torch.float64, device=device)
        loss0, err0 = obj.value(zero)
        base_losses.append(loss0)
        search.progress["chunk"] = i
        if kind == "worst":
            run = _worst_chunk(obj, zero, loss0, err0, search)
        else:
            run = _average_chunk(obj, loss0, err0, search, i)
        increases.append(run.increase)
        if run.error_increase is not None:
            error_increases.append(run.error_increase)
        work += run.work
        # the losses' rounding, measured: the same losses with the weights jittered in their
        # last places (two more forward passes per chunk, not counted as work)
        m0 = abs(obj.value(zero, jitter())[0] - loss0)
        m1 = abs(obj.value(run.z, jitter())[0] - run.loss)
        measured.append(m0 + m1)
        stored.append(abs(loss0) + abs(run.loss))
        if keep_perturbations:
            kept.append(run.z)
    weights = [chunk.size for chunk in chunks]
    total = sum(weights)
    value = sum(w * s for w, s in zip(weights, increases, strict=True)) / total
    level = ROUNDING_FACTOR * (max(measured) + eps * sum(stored) / len(stored))
    se, ci = _interval(value, increases, level)
    err_inc = (
        sum(w * e for w, e in zip(weights, error_increases, strict=True)) / total
        if len(error_increases) == len(chunks)
        else None
    )
    return SharpnessEstimate(
        value=value,
        error_increase=err_inc,
        std_error=se,
        per_chunk=increases,
        chunks=len(chunks),
        examples=total,
        loss=sum(w * v for w, v in zip(weights, base_losses, strict=True)) / total,
        gradients=work,
        seconds=time.perf_counter() - start,
        details={"perturbations": kept} if keep_perturbations else {},
        rounding_level=level,
        ci95=ci,
    )
