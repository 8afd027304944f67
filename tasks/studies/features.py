"""The features of a study (every numeric measure found in the members' results, and the
baselines) and each one's statistics against the observed gaps: τ-b, Ψ (+ per
hyperparameter), CMI on the raw values (all rank- or sign-based, so a monotone transform
changes nothing), and the leave-one-out error of a ridge predictor of the gap from that
feature alone (value or log, chosen inside the loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tasks.studies import baselines as bl
from tasks.studies import significance as sig
from tasks.studies.predictor import LooError, feature_columns, nested_loo
from tasks.studies.ranking import conditional_mutual_information, granulated_kendall, kendall_tau_b
from tasks.studies.results import (
    ConditionalMIReport,
    FeatureReport,
    GranulatedKendall,
    HyperparameterTau,
    LooErrorReport,
    MemberData,
)


@dataclass
class Feature:
    name: str
    kind: str
    raw: list[float | None]  # one per unit of the study (all units, in order)
    columns: dict[str, np.ndarray]  # encodings ("none", "log"), standardised, NaN if missing


def column_label(name: str, encoding: str) -> str:
    return f"log({name})" if encoding == "log" else name


def loo_report(err: LooError, residuals: np.ndarray, groups: np.ndarray) -> LooErrorReport:
    se = sig.loo_se(residuals, groups)
    return LooErrorReport(mae=err.mae, rmse=err.rmse, n=err.n, se=se if math.isfinite(se) else None)


def study_features(units: list[MemberData]) -> list[Feature]:
    names = sorted({k for m in units if m.state == "observed" for k in m.measures})
    out = []
    for kind, keys in (("measure", names), ("baseline", list(bl.NAMES))):
        for name in keys:
            table = "measures" if kind == "measure" else "baselines"
            raw = [
                getattr(m, table).get(name) if m.state in ("observed", "to_predict") else None
                for m in units
            ]
            out.append(Feature(name, kind, raw, feature_columns(raw)))
    return out


def independent(groups: np.ndarray) -> int:
    return int(np.unique(groups).size)


def _single_feature_loo(
    f: Feature, rows: list[int], y: np.ndarray, groups: np.ndarray
) -> tuple[LooErrorReport, str]:
    """LOO error of predicting the gap from this feature alone, the encoding (value or log)
    chosen inside the loop; and the encoding chosen on all rows."""
    encodings = list(f.columns)
    x = np.column_stack([f.columns[e][rows] for e in encodings])
    fit = nested_loo(x, y, [(j,) for j in range(len(encodings))], groups)
    return loo_report(fit.error, fit.residuals, groups), encodings[fit.full_model.columns[0]]


def feature_report(
    f: Feature, units: list[MemberData], observed: list[int], groups: np.ndarray
) -> FeatureReport | None:
    rows = [i for i in observed if f.raw[i] is not None]
    if len(rows) < 2:
        return None
    x = [float(f.raw[i]) for i in rows]  # type: ignore[arg-type]
    y = [float(units[i].gap) for i in rows]  # type: ignore[arg-type]
    hps = [units[i].hyperparameters for i in rows]
    g = granulated_kendall(x, y, hps)
    c = conditional_mutual_information(x, y, hps)
    loo, encoding = None, "none"
    if independent(groups[rows]) >= 3:
        loo, encoding = _single_feature_loo(f, rows, np.array(y), groups[rows])
    return FeatureReport(
        name=f.name,
        kind=f.kind,  # type: ignore[arg-type]
        n=len(rows),
        transform=encoding,  # type: ignore[arg-type]
        kendall_tau=kendall_tau_b(x, y),
        granulated=GranulatedKendall(
            psi=g.psi,
            per_hyperparameter={
                k: HyperparameterTau(tau=v.tau, groups=v.groups)
                for k, v in g.per_hyperparameter.items()
            },
        ),
        cmi=ConditionalMIReport(value=c.value, conditioning=c.conditioning),
        loo=loo,
    )


def best(reports: list[FeatureReport]) -> FeatureReport | None:
    ranked = [r for r in reports if r.kendall_tau is not None]
    if not ranked:
        return None
    return max(
        ranked, key=lambda r: (abs(r.kendall_tau or 0.0), -(r.loo.mae if r.loo else math.inf))
    )
