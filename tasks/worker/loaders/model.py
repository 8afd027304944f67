"""What every model loader returns, and the checks every loaded model passes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tasks.artifacts.formats import ModelFormatName
from tasks.worker.errors import LoadError

HOW_TO_EXPORT = (
    "Upload one of: a torch.export archive (ep = torch.export.export(model.eval(), (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)); torch.export.save(ep, 'model.pt2')), "
    "a TorchScript archive (torch.jit.save(torch.jit.script(model), 'model.pt')), or "
    "safetensors weights (safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) "
    "with a zoo architecture name and config."
)


@dataclass
class LoadedModel:
    """An uploaded model as an nn.Module, with the format it was read from."""

    module: nn.Module
    format: ModelFormatName
    input_shape: str | None = None  # what the model expects, when the archive says it
    #: what the job's `precision` made of it (tasks.worker.loading.apply_precision): asked,
    #: model_dtype (the file's), products_dtype (what the module now computes in)
    precision: dict[str, str] | None = None

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32


def check_finite(module: nn.Module, name: str) -> None:
    """NaN or Inf weights make every measure meaningless: refuse them, naming the tensor."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for pname, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise LoadError(
                "Non-finite weights",
                f"{name}: parameter {pname!r} holds {bad} NaN or Inf value(s)",
            )
