"""Sharpness along a training trajectory: edge of stability and rotation of the top eigenvectors.

Wang & Roberts 2024 ("Can Stability be Detrimental?", arXiv 2412.17613) find that when
training runs beyond the stability threshold λmax > 2/η, the top Hessian eigenvectors rotate,
moving the parameters towards flatter regions. Two figures per checkpoint pair say so:

- the stability ratio  r = sharpness / threshold, against the edge of the run's optimizer
  (tasks.engine.stability). Gradient descent on a quadratic with curvature λ multiplies the error
  along that eigendirection by (1 − ηλ) per step, which diverges when λ > 2/η, so for GD
  r = λmax·η/2; heavy-ball momentum β moves the edge to (2 + 2β)/η, Nesterov to
  (2 + 2β)/((1 + 2β)η), and for Adam the sharpness is λmax(P⁻¹H) (P its preconditioner, from
  the checkpoint's optimizer state) against (2 + 2β₁)/((1 − β₁)η). r > 1: beyond the edge.
  For Adam the eigenpairs (and so the overlaps) are those of P⁻¹H — its eigenvectors D y in
  parameter space, y those of the symmetric D H D, D = P^{−1/2} — and λmax of H is reported
  beside them.
- the top-eigenvector overlap  |⟨v₁(t), v₁(t+1)⟩|  ∈ [0, 1] (the absolute value: an
  eigenvector's sign is arbitrary), and the subspace overlap of the top-k eigenvectors

      s = ‖V_tᵀ V_{t+1}‖²_F / k = (1/k) Σᵢ cos² φᵢ ∈ [0, 1],

  where V are dim×k matrices with orthonormal columns and φᵢ the principal angles between the
  two subspaces (cos φᵢ = singular values of V_tᵀV_{t+1}). s is invariant under V → VR for any
  orthogonal k×k R: sign flips and reorderings of the eigenvectors, and any rotation inside a
  degenerate eigenspace, leave it unchanged; only a turn of the subspace itself lowers it.
  A degenerate pair λ_k = λ_{k+1} straddling the cut makes the top-k subspace ill-defined:
  read s with the eigenvalue gap in mind (the eigenvalues are reported alongside).

Everything here is a function of eigenvector matrices, plus `TrajectoryTracker`, which takes
checkpoints one at a time and keeps only the previous checkpoint's eigenvectors (dim×k
float64) in memory: a trajectory of many large checkpoints never holds more than two.
No Celery, FastAPI or Redis here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tasks.engine.context import MeasureContext
from tasks.engine.lanczos import LanczosOptions, lanczos
from tasks.engine.measures.base import attributes
from tasks.engine.operator import HessianOperator
from tasks.engine.preconditioner import PreconditionedOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.stability import edge
from tasks.engine.stability import stability_ratio as ratio_of

NamedShapes = list[tuple[str, tuple[int, ...]]]


class ShapeMismatch(ValueError):
    """Two checkpoints do not share parameter names and shapes: their eigenvectors live in
    different spaces and cannot be compared."""


def stability_ratio(lambda_max: float, learning_rate: float) -> float:
    """Gradient descent's λmax·η/2: above 1 the checkpoint is beyond the edge 2/η."""
    return float(lambda_max) * float(learning_rate) / 2.0


def _orthonormal(V: Tensor) -> Tensor:
    """Columns of V as an orthonormal basis (reduced QR); a no-op for Ritz vectors up to
    rounding, but a caller's raw vectors need not be normalised."""
    V = V.to(torch.float64)
    if V.ndim == 1:
        V = V[:, None]
    Q, _ = torch.linalg.qr(V, mode="reduced")
    return Q


def top_overlap(u: Tensor, v: Tensor) -> float:
    """|⟨u, v⟩| / (‖u‖‖v‖): the cosine of the angle between two eigenvector lines, in [0, 1]."""
    u, v = u.to(torch.float64).reshape(-1), v.to(torch.float64).reshape(-1)
    if u.shape != v.shape:
        raise ShapeMismatch(f"vectors of length {u.numel()} and {v.numel()} cannot be compared")
    return float(min(1.0, abs(float(u @ v)) / float(u.norm() * v.norm())))


def principal_cosines(V: Tensor, W: Tensor) -> list[float]:
    """cos φᵢ of the principal angles between span(V) and span(W), descending: the singular
    values of QᵥᵀQ_w for orthonormal bases Qᵥ, Q_w (Björck & Golub 1973)."""
    if V.shape[0] != W.shape[0]:
        raise ShapeMismatch(f"bases of dimension {V.shape[0]} and {W.shape[0]} differ")
    s = torch.linalg.svdvals(_orthonormal(V).T @ _orthonormal(W))
    return [float(min(1.0, c)) for c in s]


def subspace_overlap(V: Tensor, W: Tensor) -> float:
    """‖QᵥᵀQ_w‖²_F / k = mean cos² of the principal angles, in [0, 1] (k = columns of V;
    V and W must have the same number of columns)."""
    if V.ndim == 2 and W.ndim == 2 and V.shape[1] != W.shape[1]:
        raise ValueError(f"subspaces of {V.shape[1]} and {W.shape[1]} vectors")
    Qv, Qw = _orthonormal(V), _orthonormal(W)
    if Qv.shape[0] != Qw.shape[0]:
        raise ShapeMismatch(f"bases of dimension {Qv.shape[0]} and {Qw.shape[0]} differ")
    k = Qv.shape[1]
    return float(min(1.0, float((Qv.T @ Qw).pow(2).sum()) / k))


def named_shapes(names: Sequence[str], shapes: Sequence[Any]) -> NamedShapes:
    return [(n, tuple(int(d) for d in s)) for n, s in zip(names, shapes, strict=True)]


def shape_mismatch(reference: NamedShapes, other: NamedShapes) -> str | None:
    """Why `other`'s flat parameter vector is not comparable with `reference`'s, or None."""
    if len(reference) != len(other):
        return f"{len(other)} parameter tensors where the first checkpoint has {len(reference)}"
    for (n0, s0), (n1, s1) in zip(reference, other, strict=True):
        if n0 != n1:
            return f"parameter {n1!r} where the first checkpoint has {n0!r}"
        if s0 != s1:
            return f"parameter {n1!r} has shape {list(s1)} but {list(s0)} in the first checkpoint"
    return None


@dataclass
class EigenPairs:
    """The top-k eigenpairs of one checkpoint's Hessian, from Lanczos."""

    eigenvalues: list[float]
    eigenvectors: Tensor  # dim×k float64, orthonormal columns, matching eigenvalues
    residual_bounds: list[float]
    converged: bool
    iterations: int
    hvps: int
    seconds: float
    backend: str = ""
    error_estimates: list[float] = field(default_factory=list)
    limited_by: str = ""  # why Lanczos stopped (tasks.engine.convergence)


def top_eigenpairs(
    problem: HessianProblem,
    k: int = 3,
    tol: float | None = None,
    max_iter: int = 400,
    seed: int = 0,
    ctx: MeasureContext | None = None,
    hvp_backend: str = "auto",
    preconditioner: Tensor | None = None,
) -> EigenPairs:
    """Top-k eigenpairs of a HessianProblem by Lanczos (full reorthogonalisation), under the
    convergence contract of lambda_max: `converged` when each error estimate is within
    tol·|θ| or within 4× the products' rounding level, `limited_by` says which or names the
    budget (max_iter) that stopped it. `tol=None` is as tight as the dtype allows. The
    eigenvector error is about bound/gap, so overlaps need a tol well below the relative
    eigenvalue gaps.

    With `preconditioner` (diag P, flat): the eigenpairs of P⁻¹H, by Lanczos on D H D
    (D = P^{−1/2}); the eigenvectors returned are D y, normalised (P⁻¹H's, in parameter space)."""
    hessian = HessianOperator(problem, backend=hvp_backend)
    op = hessian if preconditioner is None else PreconditionedOperator(hessian, preconditioner)
    options = LanczosOptions(k=k, tol=tol, max_iter=max_iter, return_eigenvectors=True, seed=seed)
    res = lanczos(op, options, ctx=ctx)
    assert res.eigenvectors is not None
    vectors = res.eigenvectors
    if isinstance(op, PreconditionedOperator):
        vectors = op.to_parameter_space(vectors)
    kept = attributes(
        res,
        "eigenvalues",
        "residual_bounds",
        "converged",
        "iterations",
        "hvps",
        "error_estimates",
        "limited_by",
    )
    return EigenPairs(eigenvectors=vectors, seconds=res.seconds, backend=hessian.backend, **kept)


def pair_overlap(previous: Tensor, current: Tensor) -> dict[str, Any]:
    """The overlaps between two checkpoints' top-k eigenvector matrices (dim×k each)."""
    return {
        "top_overlap": top_overlap(previous[:, 0], current[:, 0]),
        "subspace_overlap": subspace_overlap(previous, current),
        "principal_cosines": principal_cosines(previous, current),
    }


@dataclass
class TrajectoryTracker:
    """Feed checkpoints in order; get each one's point and its overlap with the one before.

    Only the previous checkpoint's eigenvectors and parameter layout are kept. `k` is the
    number of eigenvectors compared (the smaller of k and what a checkpoint's Lanczos returned).
    """

    k: int = 3
    _shapes: NamedShapes | None = None
    _previous: Tensor | None = None
    count: int = 0

    def check(self, shapes: NamedShapes) -> None:
        """Raise ShapeMismatch when `shapes` differ from the first checkpoint's."""
        if self._shapes is None:
            return
        why = shape_mismatch(self._shapes, shapes)
        if why:
            raise ShapeMismatch(why)

    def add(
        self,
        shapes: NamedShapes,
        pairs: EigenPairs,
        learning_rate: float,
        optimizer: dict[str, Any] | None = None,
        hessian_lambda_max: float | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Record one checkpoint's eigenpairs; returns (point, overlap with the previous).

        `optimizer`: {"name": "gd" | "sgd" | "adam", "momentum", "nesterov", "beta1"} (GD when
        None). For adam, `pairs` are those of P⁻¹H and `hessian_lambda_max` is λmax of H."""
        self.check(shapes)
        opt = {"name": "gd", **(optimizer or {})}
        e = edge(
            opt["name"],
            learning_rate,
            momentum=opt.get("momentum", 0.0),
            nesterov=opt.get("nesterov", False),
            beta1=opt.get("beta1", 0.9),
        )
        top = pairs.eigenvalues[0]
        preconditioned = e.sharpness == "preconditioned_lambda_max"
        if preconditioned and hessian_lambda_max is None:
            raise ValueError("adam's point needs λmax of H beside the eigenpairs of P⁻¹H")
        ratio = ratio_of(top, e.threshold)
        point = {
            "lambda_max": hessian_lambda_max if preconditioned else top,
            "eigenvalues": list(pairs.eigenvalues),
            "optimizer": opt["name"],
            "preconditioned_lambda_max": top if preconditioned else None,
            "stability_quantity": e.sharpness,
            "stability_threshold": e.threshold,
            "stability_ratio": ratio,
            "beyond_edge": ratio > 1.0,
            "residual_bounds": list(pairs.residual_bounds),
            "converged": pairs.converged,
            "limited_by": pairs.limited_by,
            "iterations": pairs.iterations,
            "hvps": pairs.hvps,
            "seconds": pairs.seconds,
        }
        V = pairs.eigenvectors.detach().to(device="cpu", dtype=torch.float64)
        overlap = None
        if self._previous is not None:
            kk = min(self.k, self._previous.shape[1], V.shape[1])
            overlap = pair_overlap(self._previous[:, :kk], V[:, :kk])
        self._shapes = self._shapes or list(shapes)
        self._previous = V
        self.count += 1
        return point, overlap
