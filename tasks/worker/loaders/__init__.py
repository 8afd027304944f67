"""Load uploaded models without ever running code that came with them: one module per model
format (tasks.artifacts.formats declares them), registered in `registry`.

    torch_export   torch.export.load, weights-only, after the upload's archive check
    torchscript    torch.jit.load: TorchScript's own restricted unpickler
    safetensors    tensors only, into an architecture of tasks.worker.zoo (zoo_weights)
    huggingface    transformers' own class for the config, safetensors weights only

Anything else (a pickled nn.Module, a bare state_dict .pt) is refused with how to export.
Datasets are read by tasks.worker.datasets.
"""

from tasks.worker.errors import LoadError
from tasks.worker.loaders.model import LoadedModel
from tasks.worker.loaders.registry import load_model

__all__ = ["LoadError", "LoadedModel", "load_model"]
