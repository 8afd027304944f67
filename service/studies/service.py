"""A stored study, evaluated against its member jobs as they are now; and the `prediction`
shown on every job.

The analysis is a pure function of the members' states, gaps and feature values, so it is
cached under a digest of exactly those (plus target and level): reading a study, or a page of
jobs from the same study, computes it once, and a job finishing changes the digest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from service.studies.analysis import Outcome, analyse
from service.studies.members import MemberData, member_data
from service.studies.schemas import MIN_MODELS, Study, StudyMember, StudySummary
from service.studies.store import StudyRecord, StudyStore
from tasks.jobstore import JobStore
from tasks.spec import Job, Prediction

CACHE_SIZE = 128
BOUND_MEASURE = "pacbayes_bound"
_cache: OrderedDict[str, Outcome | None] = OrderedDict()
_lock = threading.Lock()


def _analysis(members: list[MemberData], record: StudyRecord) -> Outcome | None:
    payload = json.dumps(
        [record.target, record.level, [asdict(m) for m in members]], sort_keys=True, default=str
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()
    with _lock:
        if digest in _cache:
            _cache.move_to_end(digest)
            return _cache[digest]
    outcome = analyse(members, record.target, record.level)
    with _lock:
        _cache[digest] = outcome
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return outcome


def _status(members: list[MemberData], outcome: Outcome | None) -> tuple[str, str]:
    count = {s: sum(m.state == s for m in members) for s in ("observed", "waiting", "failed")}
    to_predict = sum(m.state == "to_predict" for m in members)
    missing = sum(m.state == "missing" for m in members)
    extras = []
    if count["waiting"]:
        extras.append(f"{count['waiting']} jobs still queued or running")
    if count["failed"]:
        extras.append(f"{count['failed']} failed or cancelled (left out)")
    if missing:
        extras.append(f"{missing} deleted (left out)")
    tail = f" ({'; '.join(extras)})" if extras else ""
    if outcome is not None:
        predicted = f", {to_predict} without a gap predicted" if to_predict else ""
        later = "; the analysis changes as they finish" if count["waiting"] else ""
        return "ready", f"Analysed {count['observed']} models with gaps{predicted}{tail}{later}."
    need = f"{count['observed']} of the {MIN_MODELS} models with a gap the analysis needs{tail}."
    if count["waiting"]:
        return "waiting", f"Waiting: {need}"
    return (
        "insufficient",
        f"Not enough data: {need} A gap needs the job's train accuracy plus a test_accuracy "
        "given with the study, or an eval_dataset on the job; create a study with more models "
        "or with their test metrics.",
    )


def evaluate(record: StudyRecord, jobs: JobStore) -> tuple[Study, Outcome | None]:
    members = [member_data(e, jobs.get(e.job), record.target) for e in record.jobs]
    outcome = _analysis(members, record)
    status, message = _status(members, outcome)
    predictions = outcome.predictions if outcome else {}
    study = Study(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        target=record.target,
        level=record.level,
        status=status,  # type: ignore[arg-type]
        message=message,
        members=[
            StudyMember(
                job=e.job,
                hyperparameters=e.hyperparameters,
                test_accuracy=e.test_accuracy,
                test_loss=e.test_loss,
                state=m.state,  # type: ignore[arg-type]
                gap=m.gap,
                gap_source=m.gap_source,
                model=m.model,
                group=e.group,
                gap_noise=m.noise_se,
                prediction=predictions.get(e.job),
            )
            for e, m in zip(record.jobs, members, strict=True)
        ],
        analysis=outcome.analysis if outcome else None,
    )
    return study, outcome


def plot_data(
    record: StudyRecord, jobs: JobStore, measure: str, baseline: str | None
) -> dict[str, Any] | None:
    """Plain data for the measure-versus-gap scatter of the observed models (the keyword
    arguments of service.plots.study.render_study_scatter), or None if the measure is not in
    the study's analysis."""
    study, outcome = evaluate(record, jobs)
    if outcome is None:
        return None
    reports = {r.name: r for r in outcome.analysis.measures + outcome.analysis.baselines}
    if measure not in reports or (baseline is not None and baseline not in reports):
        return None
    members = [member_data(e, jobs.get(e.job), record.target) for e in record.jobs]
    observed = [m for m in members if m.state == "observed"]

    def values(name: str) -> list[float | None]:
        return [m.measures.get(name, m.baselines.get(name)) for m in observed]

    data: dict[str, Any] = {
        "measure": measure,
        "xs": values(measure),
        "gaps": [m.gap for m in observed],
        "tau": reports[measure].kendall_tau,
        "labels": [",".join(f"{k}={v}" for k, v in m.hyperparameters.items()) for m in observed],
    }
    if baseline is not None:
        data["baseline"] = {
            "name": baseline,
            "xs": values(baseline),
            "tau": reports[baseline].kendall_tau,
        }
    return data


def summary(record: StudyRecord) -> StudySummary:
    return StudySummary(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        target=record.target,
        level=record.level,
        jobs=len(record.jobs),
    )


# ------------------------------------------------------------------ predictions on jobs
NO_STUDY = (
    "No calibrated prediction: this job is in no study. Sharpness and the other measures do "
    "not predict the generalization gap on their own (across training settings they often "
    "track the learning rate or batch size instead); add this job to a study "
    "(POST /v1/studies) with related models whose test metrics are known to get one."
)


def _measured_gap(job: Job, target: str = "accuracy_gap") -> float | None:
    gap = (job.evaluation or {}).get("gap")
    if not isinstance(gap, dict):
        return None
    value = gap.get("loss" if target == "loss_gap" else "accuracy")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bound(job: Job) -> dict[str, Any] | None:
    result = job.results.get(BOUND_MEASURE)
    if result is None:
        return None
    data = result.model_dump(exclude={"per_layer"}, exclude_none=True)
    data["note"] = "an upper bound on the test error, not a prediction of it"
    return data


def _extras(job: Job) -> str:
    words = []
    if _measured_gap(job) is not None:
        words.append("measured_gap is the gap measured on the job's eval_dataset")
    if _bound(job) is not None:
        words.append("bound is a PAC-Bayes bound on the test error, not a prediction")
    return (" " + "; ".join(words) + ".") if words else ""


def _uncalibrated(pred: Any, outcome: Outcome) -> str:
    """Why a study's prediction for a job is not served as calibrated."""
    if outcome.analysis.predictor_beats_mean_gap is False:
        const = outcome.analysis.constant_predictor.mae
        mean = f"{outcome.mean_gap:.3g}" if outcome.mean_gap is not None else "n/a"
        return (
            f"the study's predictor does no better than predicting the mean gap ({mean}; "
            f"leave-one-out MAE {const:.3g}), so it gives no calibrated prediction "
            f"({outcome.basis})"
        )
    ranges = "; ".join(f"{k} in [{v[0]:.4g}, {v[1]:.4g}]" for k, v in pred.outside_range.items())
    interval = f"[{pred.interval[0]:.3g}, {pred.interval[1]:.3g}]" if pred.interval else "unbounded"
    return (
        f"this job lies outside the study's range ({ranges}): its prediction {pred.gap:.3g}, "
        f"interval {interval}, is an extrapolation without a coverage guarantee"
    )


class Predictor:
    """Fills `Job.prediction`, evaluating each study at most once per instance (one request)."""

    def __init__(self, jobs: JobStore, studies: StudyStore) -> None:
        self.jobs = jobs
        self.studies = studies
        self._seen: dict[str, tuple[Study, Outcome | None] | None] = {}

    def _study(self, study_id: str) -> tuple[Study, Outcome | None] | None:
        if study_id not in self._seen:
            record = self.studies.get(study_id)
            self._seen[study_id] = evaluate(record, self.jobs) if record else None
        return self._seen[study_id]

    def predict(self, job: Job) -> Prediction:
        reasons = []
        final = 0  # reasons that more finished jobs would not change
        for study_id in self.studies.studies_of(job.id):
            found = self._study(study_id)
            if found is None:
                continue
            study, outcome = found
            member = next((m for m in study.members if m.job == job.id), None)
            pred = member.prediction if member else None
            if outcome is not None and pred is not None and not pred.calibrated:
                reasons.append(
                    f"in study '{study.name}' ({study.id}) {_uncalibrated(pred, outcome)}"
                )
                final += 1
                continue
            if outcome is not None and pred is not None:
                how = (
                    "its own gap was left out of the fit, and the interval is split conformal "
                    "on the other models' leave-one-out residuals"
                    if pred.kind == "leave_one_out"
                    else "the interval is jackknife+ on the leave-one-out residuals"
                )
                note = f"; {pred.note}" if pred.note else ""
                scope = (
                    ". It holds for models like the study's (same data and architecture, "
                    "hyperparameters in its range)"
                )
                return Prediction(
                    calibrated=True,
                    gap=pred.gap,
                    interval=pred.interval,
                    level=pred.level,
                    basis=f"Study '{study.name}': {outcome.basis}; {how}{note}{scope}.",
                    best_measure=study.analysis.best_measure if study.analysis else None,
                    study=study.id,
                    measured_gap=_measured_gap(job, study.target),
                    bound=_bound(job),
                )
            state = member.state if member else "missing"
            if state == "waiting" or job.status.value in ("queued", "running"):
                why = "it will be predicted once the job has succeeded"
            elif outcome is None:
                why = study.message.rstrip(".")
            else:
                why = "the study's predictor needs measure values this job lacks"
            reasons.append(f"in study '{study.name}' ({study.id}) {why}")
        if not reasons:
            return _without_study(job)
        head = "No calibrated prediction" + (": " if final == len(reasons) else " yet: ")
        return Prediction(
            calibrated=False,
            basis=head + "; ".join(reasons) + "." + _extras(job),
            measured_gap=_measured_gap(job),
            bound=_bound(job),
        )


def _without_study(job: Job) -> Prediction:
    return Prediction(
        calibrated=False,
        basis=NO_STUDY + _extras(job),
        measured_gap=_measured_gap(job),
        bound=_bound(job),
    )


def with_predictions(jobs: Iterable[Job], store: JobStore, studies: StudyStore) -> list[Job]:
    """The jobs with `prediction` filled in (what the job routes return)."""
    predictor = Predictor(store, studies)
    return [j.model_copy(update={"prediction": predictor.predict(j)}) for j in jobs]


def with_new_prediction(job: Job) -> Job:
    """A job that a submit just made, with its `prediction`: it is in no study yet (a study
    names jobs that exist), so nothing is read."""
    return job.model_copy(update={"prediction": _without_study(job)})
