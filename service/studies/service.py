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

from service.studies.schemas import (
    MemberPrediction,
    Study,
    StudyAnalysis,
    StudyJob,
    StudyMember,
    StudySummary,
)
from service.studies.store import StudyRecord, StudyStore
from tasks.contract.spec import Job, Prediction, StudyPrediction
from tasks.store.records import JobStore
from tasks.studies.analysis import Outcome, analyse
from tasks.studies.members import member_data
from tasks.studies.results import MIN_MODELS, MemberData, MemberEntry

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


def _entry(job: StudyJob) -> MemberEntry:
    """A member as the statistics read it."""
    return MemberEntry(
        job=job.job,
        hyperparameters=dict(job.hyperparameters),
        test_accuracy=job.test_accuracy,
        test_loss=job.test_loss,
        group=job.group,
    )


def _members(record: StudyRecord, jobs: JobStore) -> list[MemberData]:
    return [member_data(_entry(e), jobs.get(e.job), record.target) for e in record.jobs]


def evaluate(record: StudyRecord, jobs: JobStore) -> tuple[Study, Outcome | None]:
    """The study as the API shows it, and the statistics' outcome it rests on (None until
    enough members have gaps). Reads Redis and may run the analysis: call it from a worker
    thread, not on the event loop."""
    members = _members(record, jobs)
    outcome = _analysis(members, record)
    status, message = _status(members, outcome)
    predictions = {
        job: MemberPrediction.model_validate(asdict(p))
        for job, p in (outcome.predictions if outcome else {}).items()
    }
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
        analysis=StudyAnalysis.model_validate(asdict(outcome.analysis)) if outcome else None,
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
    members = _members(record, jobs)
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
            f"the study's predictor is not significantly more accurate than predicting the "
            f"mean gap ({mean}; leave-one-out MAE {const:.3g}), so it gives no calibrated "
            f"prediction ({outcome.basis})"
        )
    ranges = "; ".join(f"{k} in [{v[0]:.4g}, {v[1]:.4g}]" for k, v in pred.outside_range.items())
    interval = f"[{pred.interval[0]:.3g}, {pred.interval[1]:.3g}]" if pred.interval else "unbounded"
    return (
        f"this job lies outside the study's range ({ranges}): its prediction {pred.gap:.3g}, "
        f"interval {interval}, is an extrapolation without a coverage guarantee"
    )


class StudyChoiceError(ValueError):
    """The study a request names for a job's prediction is unknown or lacks the job."""

    def __init__(self, message: str, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


class Predictor:
    """Fills `Job.prediction`, evaluating each study at most once per instance (one request).

    A job in one study gets that study's prediction (`selection: only_study`); a job in
    several gets each study's prediction in `studies` and no top-level gap unless the request
    names one (`?study=`, `selection: requested`), so no study is ever picked silently."""

    def __init__(self, jobs: JobStore, studies: StudyStore) -> None:
        self.jobs = jobs
        self.studies = studies
        self._seen: dict[str, tuple[Study, Outcome | None] | None] = {}

    def _study(self, study_id: str) -> tuple[Study, Outcome | None] | None:
        if study_id not in self._seen:
            record = self.studies.get(study_id)
            self._seen[study_id] = evaluate(record, self.jobs) if record else None
        return self._seen[study_id]

    def check(self, job_id: str, study_id: str) -> None:
        """Raise StudyChoiceError unless `study_id` names a study the job is a member of."""
        member_of = self.studies.studies_of(job_id)
        if study_id in member_of:
            return
        known = ", ".join(member_of) if member_of else "none"
        if self.studies.get(study_id) is None:
            raise StudyChoiceError(
                f"no study {study_id}; this job's studies: {known} (GET /v1/studies lists "
                "them all); leave study= out to see every study's prediction",
                unknown=True,
            )
        raise StudyChoiceError(
            f"job {job_id} is not a member of study {study_id}; this job's studies: {known}; "
            "name one of them, leave study= out, or add the job to the study "
            "(POST /v1/studies)",
            unknown=False,
        )

    def _one(self, job: Job, study_id: str) -> tuple[StudyPrediction, bool] | None:
        """This study's prediction for the job, and whether its reason is final (more
        finished jobs would not change it); None if the study is gone."""
        found = self._study(study_id)
        if found is None:
            return None
        study, outcome = found
        member = next((m for m in study.members if m.job == job.id), None)
        pred = member.prediction if member else None
        head = f"Study '{study.name}' ({study.id})"
        best = study.analysis.best_measure if study.analysis else None
        if outcome is not None and pred is not None and not pred.calibrated:
            basis = f"{head}: {_uncalibrated(pred, outcome)}"
            return StudyPrediction(
                study=study.id, name=study.name, calibrated=False, basis=basis, best_measure=best
            ), True
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
            return StudyPrediction(
                study=study.id,
                name=study.name,
                calibrated=True,
                gap=pred.gap,
                interval=pred.interval,
                level=pred.level,
                basis=f"{head}: {outcome.basis}; {how}{note}{scope}.",
                best_measure=best,
            ), True
        state = member.state if member else "missing"
        if state == "waiting" or job.status.value in ("queued", "running"):
            why, final = "it will be predicted once the job has succeeded", False
        elif outcome is None:
            why, final = study.message.rstrip("."), False
        else:
            why, final = "the study's predictor needs measure values this job lacks", True
        return StudyPrediction(
            study=study.id,
            name=study.name,
            calibrated=False,
            basis=f"{head}: {why}",
            best_measure=best,
        ), final

    def predict(self, job: Job, study: str | None = None) -> Prediction:
        """The job's prediction; with `study`, only that study's (checked with `check`)."""
        if study is not None:
            self.check(job.id, study)
        ids = [study] if study is not None else self.studies.studies_of(job.id)
        found = [r for sid in ids if (r := self._one(job, sid)) is not None]
        if not found:
            return _without_study(job)
        per = [p for p, _ in found]
        extras = dict(measured_gap=_measured_gap(job), bound=_bound(job), studies=per)
        if study is None and len(per) > 1:
            names = ", ".join(f"'{p.name}' ({p.study})" for p in per)
            calibrated = sum(p.calibrated for p in per)
            return Prediction(
                calibrated=False,
                basis=f"No single prediction: this job is in {len(per)} studies ({names}), "
                f"{calibrated} of which give a calibrated prediction; each study's prediction "
                "is in `studies`. Read one with GET /v1/jobs/{id}?study=<study id>; the "
                "service does not pick one for you." + _extras(job),
                selection="several_studies",
                **extras,  # type: ignore[arg-type]
            )
        one, final = per[0], found[0][1]
        selection = "requested" if study is not None else "only_study"
        chosen = (
            "the study named by ?study=" if study is not None else "the only study this job is in"
        )
        if one.calibrated:
            target = self._seen[one.study][0].target  # type: ignore[index]
            return Prediction(
                calibrated=True,
                gap=one.gap,
                interval=one.interval,
                level=one.level,
                basis=f"{one.basis} From {chosen}.",
                best_measure=one.best_measure,
                study=one.study,
                selection=selection,  # type: ignore[arg-type]
                measured_gap=_measured_gap(job, target),
                bound=_bound(job),
                studies=per,
            )
        head = "No calibrated prediction" + (": " if final else " yet: ")
        return Prediction(
            calibrated=False,
            basis=f"{head}{one.basis[0].lower()}{one.basis[1:]} (from {chosen})." + _extras(job),
            study=one.study,
            selection=selection,  # type: ignore[arg-type]
            **extras,  # type: ignore[arg-type]
        )


def _without_study(job: Job) -> Prediction:
    return Prediction(
        calibrated=False,
        basis=NO_STUDY + _extras(job),
        measured_gap=_measured_gap(job),
        bound=_bound(job),
    )


def with_predictions(
    jobs: Iterable[Job], store: JobStore, studies: StudyStore, study: str | None = None
) -> list[Job]:
    """The jobs with `prediction` filled in (what the job routes return); `study` names the
    study to predict from (StudyChoiceError if a job is not its member). Reads Redis and may
    run a study's analysis: call it from a worker thread, not on the event loop."""
    predictor = Predictor(store, studies)
    return [j.model_copy(update={"prediction": predictor.predict(j, study)}) for j in jobs]


def with_new_prediction(job: Job) -> Job:
    """A job that a submit just made, with its `prediction`: it is in no study yet (a study
    names jobs that exist), so nothing is read."""
    return job.model_copy(update={"prediction": _without_study(job)})
