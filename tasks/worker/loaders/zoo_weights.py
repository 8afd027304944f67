"""safetensors weights of a built-in architecture: the tensors only, loaded into the module
that tasks.worker.zoo builds from the architecture's name and config (both recorded at upload).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from tasks.artifacts import formats, model_refs
from tasks.worker import zoo
from tasks.worker.errors import LoadError
from tasks.worker.loaders.model import LoadedModel


def _state_dict(path: Path) -> dict[str, Any]:
    """The tensors of one safetensors file, or of every shard of a sharded checkpoint's index
    (a model registered by reference) as one state dict."""
    if not path.name.lower().endswith(model_refs.INDEX_SUFFIX):
        return load_file(str(path))
    state: dict[str, Any] = {}
    for shard in model_refs.sharded_checkpoint(path, path.name).weights:
        state.update(load_file(str(shard)))
    return state


def load_zoo_weights(path: Path, name: str, meta: dict[str, Any]) -> LoadedModel:
    """The zoo architecture `meta["architecture"]`, its weights from the safetensors file."""
    arch = meta.get("architecture")
    if not arch:
        raise LoadError(
            "Architecture missing",
            f"{name}: safetensors holds only weights; give an architecture "
            f"({', '.join(sorted(zoo.ARCHITECTURES))}) and its config when uploading",
        )
    try:
        module = zoo.build(arch, meta.get("config"))
    except zoo.ZooError as e:
        raise LoadError("Bad architecture", f"{name}: {e}") from e
    try:
        state = _state_dict(path)
    except (SafetensorError, OSError) as e:
        raise LoadError("Unreadable weights", f"{name}: not a safetensors file ({e})") from e
    _take_dtype(module, state)
    try:
        module.load_state_dict(zoo.align_keys(module, state), strict=True)
    except RuntimeError as e:
        raise LoadError(
            "Weights do not fit the architecture",
            f"{name}: weights do not match architecture {arch!r}: {e}",
        ) from e
    return LoadedModel(module, formats.SAFETENSORS)


def _take_dtype(module: Any, state: dict[str, Any]) -> None:
    """Build the architecture in the dtype its weights were saved in (bfloat16 weights make a
    bfloat16 module; load_state_dict would otherwise upcast them silently into the float32
    module zoo.build makes): the job's `precision` decides what they are measured in. Weights
    of mixed floating dtypes are loaded into the module as built."""
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(dtypes.pop())
