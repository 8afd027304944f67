"""Trace and Frobenius intervals include the products' rounding, against exact float64 Hessians.

A float32 model and its data convert to float64 exactly, so the dense float64 Hessian of the
copy (torch.autograd.functional.hessian) is the true Hessian of the model that was measured,
and the float32 products' own dense matrix H̃ (its columns H̃e_j) shows what rounding did.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tasks.engine.convergence import ROUNDING_MULTIPLE
from tasks.engine.lanczos import NotConvergedWarning
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.engine.trace import block_krylov, frobenius, hutchinson, hutchpp, xtrace
from tests.engine import cases
from tests.engine.models import data, make, spectrum_matrix

F64 = torch.float64
EPS32 = torch.finfo(torch.float32).eps


def float32_case(name: str, seed: int = 0):
    """The float32 problem, the true (float64) Hessian, and the float32 products' matrix."""
    p, H = cases.float32_case(name, seed)
    computed = HessianOperator(p).matmat(torch.eye(p.dim, dtype=F64))
    return p, H, computed


def wide(lo: float, hi: float, level: float) -> bool:
    """hi − lo ≥ 2·level, up to the float64 rounding of forming lo and hi."""
    return level > 0 and hi - lo >= 2 * level * (1 - 1e-6)


NAMES = ["mlp_tanh", "cnn_bn", "transformer", "residual", "tied", "cnn_big_data"]


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    return (
        request.param,
        *float32_case(request.param, 1 if request.param == "cnn_big_data" else 0),
    )


def test_exact_trace_interval_has_width_and_holds_the_true_trace(case) -> None:
    """As many products as parameters: the trace is exact up to rounding, which the interval
    now includes (it was [v, v], with the true value 1e-7 relative outside)."""
    name, p, H, computed = case
    true = float(torch.trace(H))
    for est in (
        block_krylov(HessianOperator(p), 2 * p.dim + 10, seed=0),
        hutchpp(HessianOperator(p), 3 * p.dim, seed=0),
    ):
        lo, hi = est.ci95
        assert est.std_error == 0.0
        assert wide(lo, hi, est.rounding_level), name
        assert lo <= true <= hi, (name, est.method, true, est.ci95)
        assert est.converged is True and est.limited_by == "float32 rounding"
        # the level is an estimate at the rounding scale, not a blanket
        assert est.rounding_level <= 1e-4 * float(torch.linalg.matrix_norm(H, 2)) * p.dim
    # the products' own trace errs by rounding only; the exact path's level covers it
    assert abs(float(torch.trace(computed)) - true) <= est.rounding_level


def test_stochastic_intervals_include_the_rounding_level(case) -> None:
    """Every estimator's interval is at least twice its rounding level wide, and that level
    covers the bias rounding puts in every probe (the products' trace error), which no
    number of probes removes."""
    name, p, H, computed = case
    bias = abs(float(torch.trace(computed)) - float(torch.trace(H)))
    # the bias is a fraction of eps·Σ|H_jj| (0.36 to 0.55 of it on these models: the share
    # moves with the kernels' summation order, which depends on the threads and the machine),
    # which the probes' mean absolute mass is at least on average
    assert bias <= EPS32 * float(H.diagonal().abs().sum()), name
    for estimator in (hutchinson, hutchpp, xtrace, block_krylov):
        est = estimator(HessianOperator(p), 30, seed=1)
        lo, hi = est.ci95
        assert wide(lo, hi, est.rounding_level), est.method
        assert bias <= est.rounding_level, (name, est.method, bias, est.rounding_level)
        assert est.converged is None and est.limited_by is None  # no rtol asked


def test_frobenius_interval_includes_its_rounding_level(case) -> None:
    """Width at least twice the level in every run; the level covers what rounding did to the
    products' own norm; the true norm inside the 95% interval in most seeds (a statistical
    interval: 7 of 8 here)."""
    name, p, H, computed = case
    true = float(torch.linalg.matrix_norm(H))
    inside = 0
    for seed in range(8):
        est = frobenius(HessianOperator(p), 100, seed=seed)
        lo, hi = est.ci95
        assert wide(lo, hi, est.rounding_level)
        inside += lo <= true <= hi
        # the norm of the products' own matrix errs by rounding only: within the level
        assert abs(float(torch.linalg.matrix_norm(computed)) - true) <= est.rounding_level
    assert inside >= 7, (name, inside)


def test_float64_products_give_float64_sized_levels() -> None:
    """A dense float64 matrix: the level is float64's, nonzero, far below float32's."""
    A = spectrum_matrix(torch.linspace(1.0, 3.0, 40, dtype=F64))
    est = block_krylov(MatrixOperator(A), 200, seed=0)
    true = float(torch.trace(A))
    lo, hi = est.ci95
    assert 0 < est.rounding_level < 1e-12 * true and lo <= true <= hi
    assert est.limited_by == "float64 rounding" and est.converged is True


def test_rtol_met_is_limited_by_tolerance() -> None:
    A = spectrum_matrix(-torch.linspace(1.0, 3.0, 50, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        est = hutchinson(MatrixOperator(A), 200, rtol=0.05)
    assert est.converged is True and est.limited_by == "tolerance"
    assert est.std_error + est.rounding_level <= 0.05 * abs(est.estimate)
    assert est.probes < 200


def test_probe_budget_is_limited_by_the_iteration_budget_and_warns() -> None:
    A = spectrum_matrix(-torch.linspace(1.0, 3.0, 50, dtype=F64))
    with pytest.warns(NotConvergedWarning, match="num_hvps=40") as caught:
        est = hutchinson(MatrixOperator(A), 40, rtol=1e-6)
    assert est.converged is False and est.limited_by == "iteration budget"
    assert est.probes == 40 and est.std_error > 1e-6 * abs(est.estimate)
    assert "raise num_hvps" in str(caught[0].message)
    with pytest.warns(NotConvergedWarning, match="frobenius"):
        fro = frobenius(MatrixOperator(A), 20, rtol=1e-9)
    assert fro.converged is False and fro.limited_by == "iteration budget"


def test_an_rtol_below_the_rounding_is_limited_by_the_rounding() -> None:
    """A diagonal matrix: every Rademacher probe gives the exact trace (and ‖Hv‖ = ‖H‖_F), so
    the standard error is 0 and an rtol under float64's rounding stops at the rounding."""
    D = torch.diag(torch.linspace(-2.0, 5.0, 30, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        est = hutchinson(MatrixOperator(D), 100, rtol=1e-20)
        fro = frobenius(MatrixOperator(D), 100, rtol=1e-20)
    for e in (est, fro):
        assert e.converged is True and e.limited_by == "float64 rounding"
        assert e.probes == 10  # stops at min_probes
        assert e.std_error <= ROUNDING_MULTIPLE * e.rounding_level


def test_trace_measure_reports_rounding_and_limited_by() -> None:
    p, H, _ = float32_case("mlp_tanh")
    res = run_measure(p, "trace", {"num_hvps": 2 * p.dim + 10})
    d = res["diagnostics"]
    lo, hi = d["ci95"]
    assert res["converged"] is True and d["limited_by"] == "float32 rounding"
    assert wide(lo, hi, d["rounding_level"]) and lo <= float(torch.trace(H)) <= hi
    budget = run_measure(p, "trace", {"method": "hutchinson", "num_hvps": 20, "rtol": 1e-6})
    assert budget["converged"] is False
    assert budget["diagnostics"]["limited_by"] == "iteration budget"
    assert any("num_hvps" in w for w in budget["warnings"])
    plain = run_measure(p, "frobenius", {"num_hvps": 20})
    assert plain["converged"] is None and "limited_by" not in plain["diagnostics"]
    assert plain["diagnostics"]["rounding_level"] > 0


def test_effective_rank_interval_allows_for_rounding_at_the_threshold() -> None:
    """A threshold placed exactly on an eigenvalue of the true Hessian: rounding decides on
    which side the computed one falls, and the rank interval now allows for both. Runs of
    `dim` steps are exact quadratures, whose brackets were points before."""
    from tasks.engine.density import slq

    p, H, _ = float32_case("mlp_tanh")
    ev = torch.linalg.eigvalsh(H)
    scale = float(ev.abs().max())
    mags = ev.abs().sort().values
    threshold = float(mags[p.dim // 2]) / scale  # the middle eigenvalue sits on it
    rank_out = int((ev.abs() > float(mags[p.dim // 2])).sum())  # it counts as near zero
    covered = 0
    for seed in range(8):
        est = slq(HessianOperator(p), runs=10, steps=p.dim, zero_threshold=threshold, seed=seed)
        lo, hi = est.effective_rank_ci95
        assert 0 < est.rounding_level < 1e-4 * scale
        assert est.effective_rank_rounding > 0  # the eigenvalue on the threshold widened it
        assert hi - lo >= est.effective_rank_rounding and lo <= est.effective_rank <= hi
        covered += lo <= rank_out <= hi and lo <= rank_out + 1 <= hi
    assert covered >= 7, covered
    # far from every eigenvalue (in the widest gap above 1e-3·λmax, where eigenvalues are
    # well above the rounding level) the rounding changes nothing
    big = mags[mags > 1e-3 * scale]
    gap = int(torch.argmax(big[1:] / big[:-1]))
    between = float((big[gap] * big[gap + 1]).sqrt()) / scale
    est = slq(HessianOperator(p), runs=4, steps=p.dim, zero_threshold=between, seed=0)
    assert est.effective_rank_rounding == pytest.approx(0.0, abs=1e-9)


def _float32_and_float64(name: str = "mlp_tanh"):
    model, batches, loss = make(name, 0)
    m32 = model.float()
    b32 = [(x.float(), y) for x, y in batches]
    b64 = [(x.double(), y) for x, y in b32]
    p32 = HessianProblem(m32, b32, loss)
    p64 = HessianProblem(copy.deepcopy(m32).double(), b64, loss)
    return p32, p64


def _value_at(p64: HessianProblem, zs: list, c: torch.Tensor, m: int, n: int) -> float:
    """The sharpness estimator's mean over chunks, evaluated in float64 at the given z's."""
    from tasks.engine.sharpness import _ChunkObjective, chunks_of

    chunks = chunks_of(p64, m, n)
    incs, sizes = [], []
    for chunk, z in zip(chunks, zs, strict=True):
        obj = _ChunkObjective(p64, chunk, c)
        incs.append(obj.value(z.double())[0] - obj.value(torch.zeros_like(c))[0])
        sizes.append(chunk.size)
    return sum(s * i for s, i in zip(sizes, incs, strict=True)) / sum(sizes)


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_bn", "transformer"])
@pytest.mark.parametrize("kind", ["worst", "average"])
def test_sharpness_interval_includes_the_losses_rounding(kind: str, name: str) -> None:
    """At a small ρ the loss increase is near the float32 rounding of the losses: the float64
    value of the same estimator (the float64 copy at the same perturbations) must lie within
    the rounding level, and the interval must be at least twice that wide."""
    from tasks.engine.sharpness import scale_vector, sharpness

    p32, p64 = _float32_and_float64(name)
    c = scale_vector(p32, True, 0.0)
    for rho in (1e-6, 1e-3):
        kw = dict(kind=kind, rho=rho, m=4, num_batches=4, iterations=6, samples=1, seed=0)
        est = sharpness(p32, keep_perturbations=True, **kw)
        zs = est.details["perturbations"]
        true = _value_at(p64, zs, c, 4, 4)
        lo, hi = est.ci95
        assert wide(lo, hi, est.rounding_level)
        assert abs(est.value - true) <= est.rounding_level, (kind, rho, est.value, true)
        assert lo <= true <= hi
        # the level is at the rounding scale: a few float32 units of the loss, not a blanket
        assert est.rounding_level <= 1e3 * EPS32 * est.loss
        if kind == "average":  # one draw per chunk: the float64 run draws the same z
            assert sharpness(p64, **kw).value == pytest.approx(true, rel=1e-9, abs=1e-15)


def test_adaptive_sharpness_measure_reports_its_interval() -> None:
    p32, _ = _float32_and_float64()
    res = run_measure(p32, "adaptive_sharpness", {"m": 16, "num_batches": 4, "iterations": 4})
    d = res["diagnostics"]
    lo, hi = d["ci95"]
    assert wide(lo, hi, d["rounding_level"]) and lo <= res["value"] <= hi
    one = run_measure(p32, "adaptive_sharpness", {"m": 64, "num_batches": 1, "iterations": 4})
    assert one["diagnostics"]["ci95"] is None  # one chunk: no sampling error to state
    assert one["diagnostics"]["rounding_level"] > 0


@pytest.mark.parametrize(("kind", "rho"), [("average", 0.05), ("worst", 0.01)])
def test_sharpness_interval_covers_the_population_value_at_its_nominal_rate(kind, rho) -> None:
    """The 95% interval over chunks is a statement about the mean chunk sharpness of the
    data: 8 random chunks of 8 examples out of 512, against the value over all 64 chunks (more
    noise draws), in 40 seeded runs. Nominal 95% (38 of 40 expected; 36 and 39 here)."""
    from tasks.engine.sharpness import sharpness
    from tests.engine.models import MLP

    torch.manual_seed(0)
    model = MLP(hidden=8).float()
    x, y = data(512, (4,), 3, 0)
    x = x.float()
    kw = dict(kind=kind, rho=rho, m=8, iterations=5)
    truth = sharpness(HessianProblem(model, [(x, y)]), num_batches=64, samples=16, seed=999, **kw)
    inside = 0
    for seed in range(40):
        rows = torch.randperm(512, generator=torch.Generator().manual_seed(seed))[:64]
        p = HessianProblem(model, [(x[rows], y[rows])])
        lo, hi = sharpness(p, num_batches=8, samples=4, seed=seed, **kw).ci95
        inside += lo <= truth.value <= hi
    assert inside >= 34, f"{inside}/40 intervals cover the value over all chunks"


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "krylov", "xtrace"])
def test_float32_trace_intervals_hold_the_float64_trace(method: str) -> None:
    """On a float32 model the true (float64) trace lies inside the 95% interval at about the
    nominal rate: 20 seeds, at least 17 (XTrace's interval is approximate: at least 15)."""
    p, H, _ = float32_case("mlp_tanh")
    estimator = {"hutchinson": hutchinson, "hutch++": hutchpp, "krylov": block_krylov}.get(
        method, xtrace
    )
    true = float(torch.trace(H))
    inside = 0
    for seed in range(20):
        lo, hi = estimator(HessianOperator(p), 30, seed=seed).ci95
        inside += lo <= true <= hi
    assert inside >= (15 if method == "xtrace" else 17), f"{inside}/20"
