"""λmax and top-k error estimates on float32 models against the exact float64 Hessian.

The float32 model and data are converted to float64 exactly (every float32 is a float64), so
the dense float64 Hessian of the copy is the true Hessian of the model that was measured; the
error of a float32 Lanczos run is then known. The estimate must cover it at every tol, and
`converged` must mean the estimate met the tol, never a silent floor.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tasks.engine.convergence import ROUNDING_MULTIPLE
from tasks.engine.lanczos import NotConvergedWarning, lanczos, rounding_level
from tasks.engine.operator import HessianOperator
from tests.engine import cases
from tests.engine.cases import dense_case

EPS32 = torch.finfo(torch.float32).eps


def float32_case(name: str, seed: int):
    """The float32 problem and the exact spectrum of its model (ascending)."""
    p, H = cases.float32_case(name, seed)
    return p, torch.linalg.eigvalsh(H)


CASES = [(n, s) for n in ("mlp_tanh", "cnn_bn", "transformer", "residual") for s in (0, 1)]
CASES.append(("cnn_big_data", 1))


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_float32_error_estimate_covers_the_true_error_at_every_tol(name, seed) -> None:
    p, exact = float32_case(name, seed)
    top = exact.flip(0)[:3]
    for tol in (1e-6, 1e-8, 1e-10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = lanczos(HessianOperator(p), k=3, tol=tol, max_iter=300)
        got = torch.tensor(res.eigenvalues, dtype=torch.float64)
        err = (got - top).abs()
        est = torch.tensor(res.error_estimates, dtype=torch.float64)
        assert bool((err <= est).all()), (name, seed, tol, err.tolist(), est.tolist())
        # the estimate is at the rounding level, not a blanket: within 100× the true error
        # or a few float32 units of ‖H‖
        scale = float(exact.abs().max())
        assert float(est.max()) <= max(100 * float(err.max()), 40 * EPS32 * scale)
        # converged exactly when every estimate meets its tol or 4× the rounding level, and
        # limited_by says which; below float32's rounding (1e-8, 1e-10) that is rounding,
        # with no warning: no budget stopped the run
        allowed = torch.clamp(tol * got.abs(), min=ROUNDING_MULTIPLE * res.rounding_level)
        assert res.converged == bool((est <= allowed).all())
        assert res.converged, (name, seed, tol, res.limited_by)
        meets_tol = bool((est <= tol * got.abs()).all())
        assert res.limited_by == ("tolerance" if meets_tol else "float32 rounding")
        if tol <= 1e-8:
            assert res.limited_by == "float32 rounding"
        assert not [w for w in caught if issubclass(w.category, NotConvergedWarning)], name
        assert res.rounding_level >= rounding_level(EPS32, scale) * 0.5


def test_small_float32_models_converge_at_the_default_tol() -> None:
    for name in ("mlp_tanh", "transformer"):
        p, exact = float32_case(name, 0)
        res = lanczos(HessianOperator(p), k=1, tol=1e-6)
        assert res.converged
        assert abs(res.eigenvalues[0] - float(exact[-1])) <= res.error_estimates[0]


def test_float64_reaches_1e_10_and_the_old_floor_is_gone() -> None:
    """tol 1e-10 on a float64 model converges at 1e-10 (the old silent floor stopped at 1e-8·θ
    and called it converged)."""
    case = dense_case("cnn_bn")
    p, exact = case.problem(), case.top
    res = lanczos(HessianOperator(p), k=3, tol=1e-10, max_iter=p.dim)
    assert res.converged
    for theta, bound, lam in zip(res.eigenvalues, res.residual_bounds, exact[:3], strict=True):
        assert bound <= 1e-10 * abs(theta)
        assert abs(theta - float(lam)) <= 1e-10 * abs(float(lam))


def test_a_tol_below_float32_rounding_converges_at_the_rounding_floor() -> None:
    """tol 1e-10 on a float32 model: as accurate as float32 products allow, so converged by
    rounding (not by the tol), and no warning."""
    p, exact = float32_case("mlp_tanh", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        res = lanczos(HessianOperator(p), k=1, tol=1e-10)
    assert res.converged and res.limited_by == "float32 rounding"
    assert res.error_estimates[0] > 1e-10 * abs(res.eigenvalues[0])
    assert res.error_estimates[0] <= ROUNDING_MULTIPLE * res.rounding_level
    assert abs(res.eigenvalues[0] - float(exact[-1])) <= res.error_estimates[0]
    assert res.measured_residuals is not None


def test_the_bounds_are_held_to_the_rounding_the_products_really_have() -> None:
    """A float32 model whose products round more coarsely than 2·eps₃₂·‖H‖ (more data): the
    rounding is measured once the top value settles, and the run stops when the bound is
    within 3× that measured floor, where the a-priori floor would have held it longer; the
    estimate still covers the true error and meets the contract."""
    p, exact = float32_case("cnn_big_data", 1)
    res = lanczos(HessianOperator(p), k=1)
    apriori = rounding_level(EPS32, float(exact.abs().max()))
    assert res.rounding_level > 1.5 * apriori  # measured, coarser than assumed
    assert res.converged and res.limited_by == "float32 rounding"
    assert apriori < res.residual_bounds[0] <= (ROUNDING_MULTIPLE - 1) * res.rounding_level
    assert abs(res.eigenvalues[0] - float(exact[-1])) <= res.error_estimates[0]
    assert res.error_estimates[0] <= ROUNDING_MULTIPLE * res.rounding_level
