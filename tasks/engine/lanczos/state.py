"""The state of a Lanczos run: the orthonormal basis Q, the projected matrix T and its
eigen-decomposition θ, S, and the residual bounds |β s_n|, with the two moves that change
them: `step` (one product, full reorthogonalisation) and `restart` (thick restart of a full
basis). `advance` chooses the next start vector after a step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.convergence import ROUNDING_MULTIPLE
from tasks.engine.lanczos.options import LanczosBudget, LanczosOptions
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.precision import rounding_level

#: β below this fraction of ‖H‖: the Krylov space is invariant
INVARIANT = 1e-12

#: a fresh direction whose norm is this small after projecting out Q: Q spans everything
EXHAUSTED = 1e-10


def random_unit(dim: int, generator: torch.Generator, device: Any) -> Tensor:
    """A seeded random unit vector, drawn on the host (the same on every device)."""
    v = torch.randn(dim, generator=generator, dtype=torch.float64, device="cpu").to(device)
    return v / v.norm()


def three_term(w: Tensor, alpha: float, q: Tensor, beta_prev: float, q_prev: Tensor) -> Tensor:
    """Hq − αq − β_{j−1}q_{j−1}: the recurrence's own step, before full reorthogonalisation
    removes what rounding left along the older vectors."""
    w = w - alpha * q
    return w - beta_prev * q_prev if beta_prev else w


def kept(n: int, wanted_top: int, wanted_bottom: int, room: int) -> Tensor:
    """Indices (ascending Ritz order) of the Ritz vectors a thick restart keeps: the wanted
    ones and about half of the remaining room of their neighbours, split between the ends
    in proportion to what is wanted there."""
    extra = max(0, (room - wanted_top - wanted_bottom) // 2)
    bottom_extra = (extra * wanted_bottom) // (wanted_top + wanted_bottom) if wanted_bottom else 0
    top = wanted_top + extra - bottom_extra
    bottom = wanted_bottom + bottom_extra if wanted_bottom else 0
    idx = list(range(bottom)) + list(range(n - top, n))
    return torch.tensor(sorted(set(idx)), dtype=torch.long)


class LanczosState:
    """Q (n orthonormal columns), T[:n, :n] = QᵀHQ, its eigenpairs θ (ascending) and S, the
    bounds |β S[n−1, i]|, and the next start vector q. `exact` once the Krylov space is known
    to hold every eigenvalue asked for (its Ritz values are then H's)."""

    def __init__(
        self,
        operator: LinearOperator,
        budget: LanczosBudget,
        options: LanczosOptions,
        v0: Tensor | None = None,
    ) -> None:
        self.operator = operator
        self.budget = budget
        self.options = options
        self.device = operator.device
        self.generator = torch.Generator().manual_seed(options.seed)
        if v0 is None:
            self.q = random_unit(budget.dim, self.generator, self.device)
        else:
            self.q = v0.double() / v0.double().norm()
        m = budget.max_basis
        plan = budget.memory
        self.Q = Basis(
            budget.dim,
            budget.basis_device,
            capacity=m,
            dtype=budget.basis_dtype,
            spill=bool(plan and plan.spill),
            spill_dir=plan.spill_dir if plan else None,
        )
        self.T = torch.zeros(m, m, dtype=torch.float64)
        self.theta = self.S = self.bounds = self.w = torch.empty(0, dtype=torch.float64)
        self.history: list[float] = []  # λmax estimate per step
        self.beta = 0.0
        self.exact = False
        self.scale = 0.0  # running estimate of ‖H‖ (largest |Ritz value|)
        self.measured_level = 0.0  # the products' rounding, once measured (verification)
        self.beta_prev = 0.0  # β of the last step, when q's predecessor is Q's last column
        self.coupling: Tensor | None = None  # after a thick restart: q's couplings with Q
        self.restarts = 0
        self.steps = 0
        self.n = 0
        self.bytes_peak = 0  # the basis' bytes in memory, at most
        self.file_bytes_peak = 0  # ... and in a file, when spilled

    def step(self) -> None:
        """Append q, multiply once, orthogonalise (recurrence, then fully against Q), and
        update T's eigen-decomposition and the bounds.

        Only one vector of the model's size lives outside the basis: q goes into Q, the
        product is taken of its stored column (what the basis holds is what is multiplied;
        the operator rounds to the model's dtype anyway; it is handed a view of the column, not
        a copy), and the recurrence reads q and its
        predecessor from Q while w, the product, is reduced in place in float64; once β is
        known, w is kept in the basis' dtype, which is all the next column needs."""
        Q = self.Q
        Q.append(self.q)
        self.q = self.w = self.q.new_empty(0)  # the column in Q is the vector from now on
        self.bytes_peak = max(self.bytes_peak, Q.nbytes)
        self.file_bytes_peak = max(self.file_bytes_peak, Q.file_bytes)
        self.n += 1
        self.steps += 1
        w = self.operator.matvec(Q.column(-1).to(self.device)).to(Q.device, torch.float64)
        alpha = Q.dot(-1, w)
        Q.subtract(-1, alpha, w)
        if self.coupling is not None:
            Q.subtract_combination(torch.cat([self.coupling, self.coupling.new_zeros(1)]), w)
            self.coupling = None
        elif self.beta_prev:
            Q.subtract(-2, self.beta_prev, w)
        w = Q.project_out(w, only_if_needed=True, overwrite=True)
        self.beta = float(w.norm())
        # w is only ever the next column now (q = w/β, stored in the basis' dtype): kept so
        self.w = w.to(Q.dtype)
        del w
        n = self.n
        self.T[n - 1, n - 1] = alpha
        self.theta, self.S = torch.linalg.eigh(self.T[:n, :n])  # ascending
        self.scale = max(self.scale, float(self.theta.abs().max()))
        self.bounds = (self.beta * self.S[-1, :]).abs()
        self.history.append(float(self.theta[-1]))

    def targets(self) -> tuple[Tensor, float]:
        """The accuracy asked of the top k Ritz values (ascending) and of the most negative:
        max(tol·|θ|, atol), the latter relative to the spectrum's scale."""
        b = self.budget
        top = torch.clamp(b.tol * self.theta[-b.k :].abs(), min=b.atol)
        bottom = max(b.tol * max(abs(float(self.theta[0])), self.scale), b.atol)
        return top, bottom

    def rounding_floor(self) -> float:
        """The rounding level the bounds are held to: the a-priori one, or the products'
        rounding measured on the top Ritz vector (`measured_level`) when that is larger."""
        return max(rounding_level(self.budget.eps, self.scale), self.measured_level)

    def settled(self) -> bool:
        """Whether the top Ritz value moved less than √eps (relative) in the last step: half
        the digits the products carry are fixed, and its Ritz vector is near enough the final
        one for the products' rounding along it to be measured."""
        h = self.history
        return len(h) >= 2 and abs(h[-1] - h[-2]) <= math.sqrt(self.budget.eps) * abs(h[-1])

    def bound_met(self, strict: float) -> bool:
        """Whether every wanted Ritz value's bound is within `strict` × its target, or within
        (ROUNDING_MULTIPLE − 1) × the rounding floor: the bound then leaves room, under the
        contract's ROUNDING_MULTIPLE × level, for the level itself, which the error estimate
        adds to the measured residual. False until k steps were taken."""
        b = self.budget
        if self.n < b.k:
            return False
        floor = (ROUNDING_MULTIPLE - 1) * self.rounding_floor()
        top_target, bottom_target = self.targets()
        ok = bool((self.bounds[-b.k :] <= strict * torch.clamp(top_target, min=floor)).all())
        if b.most_negative:
            ok = ok and float(self.bounds[0]) <= strict * max(bottom_target, floor)
        return ok

    def advance(self) -> bool:
        """Choose the next q: w/β, a thick restart when the basis is full, or a fresh random
        direction when the space became invariant. False when there is none: Q spans
        everything and the Ritz values are exact."""
        invariant = self.beta <= INVARIANT * max(self.scale, 1e-300)
        if self.n == self.budget.max_basis:
            if self.budget.max_basis >= self.budget.dim:
                self.mark_exact()  # T is similar to H: every Ritz value is exact
                return False
            self.restart(invariant)
            return True
        if invariant:
            # invariant subspace: its Ritz values are exact; continue from a fresh direction
            fresh = self.Q.project_out(random_unit(self.budget.dim, self.generator, self.device))
            nrm = float(fresh.norm())
            if nrm <= EXHAUSTED:
                self.mark_exact()
                return False
            self.beta_prev, self.q = 0.0, fresh.div_(nrm)
        else:
            n = self.n
            self.T[n, n - 1] = self.T[n - 1, n] = self.beta
            self.beta_prev, self.q = self.beta, self.w.div_(self.beta)
        return True

    def restart(self, invariant: bool) -> None:
        """Thick restart: keep the wanted Ritz vectors and their nearest neighbours,
        Q ← Q·S[:, kept], T ← diag(θ_kept) bordered by the couplings β·S[n−1, kept], and go on
        from w/β (or a fresh direction when β ≈ 0)."""
        b = self.budget
        keep = kept(self.n, b.k, b.wanted_bottom, b.max_basis)
        p = int(keep.numel())
        self.Q.transform(self.S[:, keep])
        self.restarts += 1
        self.T.zero_()
        self.T[:p, :p] = torch.diag(self.theta[keep])
        if invariant:
            fresh = self.Q.project_out(random_unit(b.dim, self.generator, self.device))
            self.q = fresh / fresh.norm()
            self.coupling = torch.zeros(p, dtype=torch.float64)
        else:
            s = self.beta * self.S[-1, keep]
            self.T[p, :p] = s
            self.T[:p, p] = s
            self.coupling = s
            self.q = self.w.div_(self.beta)
        self.n = p

    def mark_exact(self) -> None:
        """The Ritz values are H's eigenvalues: their bounds are zero."""
        self.exact = True
        self.bounds = torch.zeros_like(self.bounds)

    def settle(self) -> None:
        """After the last step: an unrestarted basis of dim vectors makes T similar to H."""
        if self.n == self.budget.dim and self.restarts == 0 and not self.exact:
            self.mark_exact()

    def top_order(self) -> Tensor:
        """Indices of the top min(k, n) Ritz values, largest first."""
        n = self.n
        return torch.arange(n - 1, n - 1 - min(self.budget.k, n), -1)

    def ritz_vector(self, i: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """Q·S[:, i] on the operator's device, in `dtype`."""
        return self.Q.combine(self.S[:, i]).to(device=self.device, dtype=dtype)
