"""The worker: everything a run does behind the Celery tasks (tasks.jobs, tasks.trajectories).

- the process: `process` (the worker's main process and its pool child), `runtime`;
- one run of a record: `run` (guard, lock, progress, limits, its end), `store_link` (its
  Redis connection), `errors` (what ends a run early, and the problem it is recorded as);
- what a job and a trajectory do: `job`, `trajectory_job`, `parallel` (data-parallel ranks);
- what they load: `loading` (model, data, problem, w₀, optimizer state), `evaluation`,
  `loaders` (one module per model format of tasks.artifacts.formats), `datasets`, `zoo`.

Everything here may import torch; nothing in the gateway imports this package. Importing any
module of it runs this file first, so the weights-only guard is set once, here, before torch can
be imported by a worker module: every torch.load in a worker process is then weights-only
(see `safe_torch`).
"""

import os

from tasks.worker import safe_torch

safe_torch.ensure_weights_only()
# A worker never reaches a model hub: Hugging Face checkpoints are read from the uploaded folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
