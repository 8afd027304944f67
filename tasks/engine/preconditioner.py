"""Adam's preconditioner from its optimizer state, and the preconditioned curvature P⁻¹H.

Cohen et al. 2022 ("Adaptive gradient methods at the edge of stability", arXiv 2207.14484)
write Adam's step as preconditioned momentum with

    P_t = (1 − β₁ᵗ) · diag( √(v_t / (1 − β₂ᵗ)) + ε ),

v_t Adam's second-moment estimate (PyTorch's `exp_avg_sq`), t its `step`; the (1 − β₁ᵗ) factor
is the first moment's bias correction, which the step divides by. The stability of Adam near
a point is governed by the preconditioned sharpness λmax(P⁻¹H) (its threshold:
tasks.engine.stability).

P⁻¹H is not symmetric, but it is similar to the symmetric D H D with D = P^{−1/2}: same
eigenvalues, and an eigenvector y of DHD gives the eigenvector D y of P⁻¹H. So Lanczos runs on
`PreconditionedOperator` (v ↦ D·H·(D v)) and its eigenvalues are those of P⁻¹H exactly.

The optimizer state comes by parameter name: `exp_avg_sq.<name>` for each selected parameter
(the shape of the parameter) and `step` (a scalar, or one element), as uploaded in a
safetensors file; `state_from_tensors` checks it against the problem.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from tasks.engine.linear_operator import LinearOperator
    from tasks.engine.problem import HessianProblem

MOMENT = "exp_avg_sq."


class OptimizerStateError(ValueError):
    """The optimizer state does not fit the model (a missing parameter, a wrong shape)."""


def state_from_tensors(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """Split a flat `{exp_avg_sq.<name>: …, step: …}` mapping into (v by name, step)."""
    if "step" not in tensors:
        raise OptimizerStateError(
            "the optimizer state has no 'step' tensor (Adam's step count t, for the bias "
            "corrections); save it as a one-element tensor named 'step'"
        )
    step_t = tensors["step"]
    if step_t.numel() != 1:
        raise OptimizerStateError(f"'step' must hold one number, it has {step_t.numel()}")
    step = float(step_t.reshape(-1)[0])
    if step < 1 or step != math.floor(step):
        raise OptimizerStateError(f"'step' must be a whole number ≥ 1, got {step}")
    v = {k[len(MOMENT) :]: t for k, t in tensors.items() if k.startswith(MOMENT)}
    if not v:
        raise OptimizerStateError(
            f"the optimizer state has no '{MOMENT}<parameter name>' tensors (Adam's exp_avg_sq "
            "by parameter name)"
        )
    other = sorted(k for k in tensors if k != "step" and not k.startswith(MOMENT))
    if other:
        raise OptimizerStateError(
            f"unexpected tensors in the optimizer state: {other[:5]}; expected 'step' and "
            f"'{MOMENT}<parameter name>'"
        )
    return v, int(step)


def adam_preconditioner(
    problem: HessianProblem,
    exp_avg_sq: dict[str, Tensor],
    step: int,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> Tensor:
    """diag(P) over the problem's selected parameters, flat, float64, on its device."""
    if step < 1:
        raise OptimizerStateError(f"step must be ≥ 1, got {step}")
    pieces = []
    for name, shape in zip(problem.names, problem.shapes, strict=True):
        if name not in exp_avg_sq:
            known = ", ".join(sorted(exp_avg_sq)[:8])
            raise OptimizerStateError(
                f"the optimizer state has no {MOMENT}{name} (it has {known}…); save Adam's "
                "exp_avg_sq for every parameter under its name in the model"
            )
        v = exp_avg_sq[name]
        if tuple(v.shape) != tuple(shape):
            raise OptimizerStateError(
                f"{MOMENT}{name} has shape {list(v.shape)}, the parameter {list(shape)}"
            )
        if bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
            raise OptimizerStateError(f"{MOMENT}{name} must be finite and ≥ 0 (a second moment)")
        pieces.append(v.reshape(-1).to(device=problem.device, dtype=torch.float64))
    v = torch.cat(pieces)
    vhat = v / (1 - beta2**step)
    return (1 - beta1**step) * (vhat.sqrt() + eps)


class PreconditionedOperator:
    """v ↦ D·A·(D v), D = diag(P)^{−1/2}: symmetric, with the eigenvalues of P⁻¹A."""

    def __init__(self, operator: LinearOperator, p_diag: Tensor) -> None:
        if p_diag.shape != (operator.dim,):
            raise ValueError(f"preconditioner of length {p_diag.numel()} for dim {operator.dim}")
        if not bool((p_diag > 0).all()):
            raise ValueError("the preconditioner must be positive (eps > 0 makes it so)")
        self.inner = operator
        self.d = p_diag.to(dtype=torch.float64, device=operator.device).rsqrt()
        self.dim, self.dtype, self.device = operator.dim, torch.float64, operator.device
        self.backend = getattr(operator, "backend", "")
        self.seconds = 0.0

    @property
    def hvps(self) -> int:
        return self.inner.hvps

    def matvec(self, v: Tensor) -> Tensor:
        return self.d * self.inner.matvec(self.d * v.to(torch.float64))

    def matmat(self, V: Tensor) -> Tensor:
        return self.d[:, None] * self.inner.matmat(self.d[:, None] * V.to(torch.float64))

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def to_parameter_space(self, Y: Tensor) -> Tensor:
        """Eigenvectors of P⁻¹A from those of DAD (D y), columns normalised to unit length."""
        U = self.d[:, None] * Y.to(torch.float64)
        return U / U.norm(dim=0, keepdim=True)
