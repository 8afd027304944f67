"""The job and trajectory specs and records in one import, for the gateway, the stores, the
worker and the SDK's type checks.

Each lives in the module of its concern: `runs` (what every run records: status, attempts,
problem details, progress), `inputs` (the model id, the dataset, how outputs are read), `jobs`
(the job spec, its results and prediction) and `trajectories` (the trajectory spec, its points
and overlaps). All of it is torch-free and imports no engine module, so the gateway and the
worker share it.
"""

from __future__ import annotations

from tasks.contract.inputs import CLASS_DIM, MODEL_ID_PATTERN, OUTPUT_KEY, DatasetRef
from tasks.contract.jobs import (
    Job,
    JobPage,
    JobSpec,
    MeasureRequest,
    MeasureResult,
    Prediction,
    StudyPrediction,
)
from tasks.contract.measures.catalogue import DATA_PARALLEL_MEASURES
from tasks.contract.runs import Attempt, JobStatus, MeasureProgress, Problem, RunRecord
from tasks.contract.trajectories import (
    EigenvectorOverlap,
    OptimizerSpec,
    Trajectory,
    TrajectoryCheckpoint,
    TrajectoryPage,
    TrajectoryPoint,
    TrajectorySpec,
)

__all__ = [
    "CLASS_DIM",
    "DATA_PARALLEL_MEASURES",
    "MODEL_ID_PATTERN",
    "OUTPUT_KEY",
    "Attempt",
    "DatasetRef",
    "EigenvectorOverlap",
    "Job",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "MeasureProgress",
    "MeasureRequest",
    "MeasureResult",
    "OptimizerSpec",
    "Prediction",
    "Problem",
    "RunRecord",
    "StudyPrediction",
    "Trajectory",
    "TrajectoryCheckpoint",
    "TrajectoryPage",
    "TrajectoryPoint",
    "TrajectorySpec",
]
