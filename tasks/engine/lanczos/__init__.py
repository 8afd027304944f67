"""Lanczos with full reorthogonalisation in a bounded basis (thick restart), stopped on the
Ritz residual bound, with an error estimate that includes the HVPs' rounding.

After n steps from a unit vector q₁ the Lanczos relation is H Q_n = Q_n T_n + β_n q_{n+1} e_nᵀ.
For an eigenpair T_n s = θ s, the Ritz vector y = Q_n s has residual

    ‖H y − θ y‖ = |β_n · s_n|        (s_n: last component of s)

and since H is symmetric there is an eigenvalue λ of H with |λ − θ| ≤ |β_n s_n|. That is all
the residual bound says: θ is near *some* eigenvalue, not necessarily the i-th largest (a
random start makes missing one unlikely, not impossible), and it is a bound only for the
operator that was applied. The HVPs are computed in the model's dtype: in float32 the applied
operator differs from the Hessian by rounding of about eps₃₂·‖H‖ (eps₃₂ = 1.2e-7), and no
residual can certify an eigenvalue more finely than that. So each eigenvalue gets

    error_estimate = max(residual bound, measured residual + rounding level)

with rounding level = ROUNDING_FACTOR · eps_dtype · ‖H‖ (‖H‖ ≈ the largest |Ritz value|).
When the HVPs are not float64, or the basis was restarted (every restart adds rounding to the
Lanczos relation that the bound rests on), each wanted Ritz vector y is multiplied once more:
the measured residual ‖H̃y − θy‖/‖y‖ under the computed product H̃ then enters, and for
float32 HVPs the rounding level is raised to the measured size ‖H̃(3y)/3 − H̃y‖ of the
products' rounding when that is larger (scaling by 3 changes every rounding; a power of two
would not). On float32 test models the true λ errors were 0.01-8·eps₃₂·‖H‖, at most a quarter
of this estimate (tests/engine/test_error_estimates.py); the rounding of activations fed to
the products grows with the data, which is why it is measured and not assumed. It remains an
estimate, not a bound: it does not see rounding that repeats identically in every product.

The convergence contract (tasks/engine/convergence.py): an eigenvalue is `converged` when its
error estimate is ≤ max(tol·|θ|, atol) (limited_by "tolerance") or ≤ ROUNDING_MULTIPLE ×
the rounding level (limited_by "<dtype> rounding": as accurate as the products allow).
`tol=None`, the default, is as tight as the dtype allows: 0 below float64 (stop at the
rounding floor), 1e-10 in float64. The run stops on the bound — every wanted Ritz value
has |β s| ≤ max(tol·|θ|, atol, (ROUNDING_MULTIPLE − 1) × rounding level), room left for the
level the estimate adds — and, where the residuals are measured, only once the measured
error estimates meet the contract as well; when they do not, it goes on with a four times
stricter bound. Below float64 the residuals and the products' rounding are also measured
once when the top Ritz value has settled (moved less than √eps relative in a step): on a
large model the products round more coarsely than the a-priori level, and that check either
meets the contract there or raises the floor the bounds are held to, so the run stops at the
floor its products really have. Only `max_iter` can stop it short of that: then
`converged` is False, limited_by "iteration budget", and a NotConvergedWarning names
max_iter and the steps taken. In exact arithmetic Ritz values lie below the top
eigenvalues (and above the most negative); with rounding they can land on either side, so
an unconverged result likely underestimates them by up to its error estimate, no more is
claimed. `atol` (default 0) accepts an absolute accuracy instead; near zero the rounding
clause already applies (the rounding level is relative to ‖H‖, not to θ).

Each step subtracts the recurrence's αq_j + β_{j−1}q_{j−1}, then reorthogonalises fully
against the basis (Gram–Schmidt, a second pass when the first lost accuracy): Q stays
orthonormal, so no ghost copies of converged eigenvalues appear. Memory is the basis: at most
`max_basis` vectors (default 40, or 2(k + 1) + 10 for large k) of dim numbers, held in
float64 on the operator's device unless asked otherwise (`basis_dtype=float32`,
`basis_device="cpu"`). When the basis is full, thick restart (Wu & Simon 2000; the symmetric
case of Stewart's Krylov–Schur) keeps the wanted Ritz vectors and about half the remaining
room of the next ones, Q ← Q·S[:, kept] in place, with the projected matrix

    T = [ diag(θ_kept)   s ]        s_i = β_n · S[n, i]
        [ sᵀ             α ] …      (then tridiagonal again)

and continues from q_{n+1}; the relation above, and so every bound, still holds. Until the
basis fills the path is the same as unrestarted Lanczos, step for step. `restarts` reports how
often the basis was compressed (each restart also costs O(dim·max_basis²) flops). When β ≈ 0
the Krylov space is invariant: its Ritz values are exact eigenvalues; if more are wanted the
run continues from a fresh random vector orthogonal to Q.

The run in named steps, one module each: `options` (what is asked, `LanczosOptions`, and the
budget it implies: steps, basis vectors, tolerances), `state` (the basis and the projected
matrix, with `step` and `restart`), `verification` (the wanted Ritz vectors' residuals under
fresh products), `verdict` (converged and limited_by, tasks.engine.convergence, and the
warnings) and `solver` (the loop that ties them). `tridiagonal` is the plain recurrence SLQ's
quadrature runs on.
"""

from tasks.engine.convergence import NotConvergedWarning
from tasks.engine.lanczos.options import DEFAULT_MAX_BASIS, LanczosOptions, default_max_basis
from tasks.engine.lanczos.solver import lanczos
from tasks.engine.lanczos.tridiagonal import lanczos_tridiagonal
from tasks.engine.lanczos.verdict import LanczosResult, RestartedWarning
from tasks.engine.precision import ROUNDING_FACTOR, rounding_level

__all__ = [
    "DEFAULT_MAX_BASIS",
    "ROUNDING_FACTOR",
    "LanczosOptions",
    "LanczosResult",
    "NotConvergedWarning",
    "RestartedWarning",
    "default_max_basis",
    "lanczos",
    "lanczos_tridiagonal",
    "rounding_level",
]
