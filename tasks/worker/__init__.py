"""The worker package: Celery task modules, model and dataset loaders, the model zoo, runtime.

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
