"""Make every torch.load in this process weights-only, before torch is imported.

torch.export.load falls back to full pickle loading for some archive members
(torch/_export/serde/serialize.py, torch/export/pt2_archive/_package.py); with
TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 those calls are forced to the restricted unpickler, so an
uploaded archive can never run code while it is read. The worker package imports this module
first (tasks/worker/__init__.py). A process that imported torch before the variable was set is
refused loudly rather than left to load uploads unsafely.
"""

from __future__ import annotations

import os
import sys

FLAG = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


class UnsafeTorchImport(RuntimeError):
    """torch was imported in this process before weights-only loading was forced."""


def ensure_weights_only() -> None:
    """Set the flag, or fail if torch is already loaded without it."""
    if os.environ.get(FLAG) == "1":
        return
    if "torch" in sys.modules:
        raise UnsafeTorchImport(
            f"torch was imported before {FLAG}=1 was set; the worker would load uploaded "
            "archives with full pickle. Import the tasks.worker package before torch."
        )
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        raise UnsafeTorchImport("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set; refusing to run")
    os.environ[FLAG] = "1"


ensure_weights_only()
