"""Which parameters a measure differentiates, each storage exactly once.

A weight tied between two places (input and output embeddings of a language model) is one
parameter: it enters the parameter vector, its norms, perturbations, eigenvectors and per-layer
blocks once. nn.Module and TorchScript already hand out one Parameter object for it, but a
torch.export program keeps one Parameter per name, aliasing the same storage; left so, the
model would be differentiated as if the two uses were independent weights. `tie_aliases`
re-registers the aliases as the one Parameter they share, and reports every name it goes by.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import Tensor, nn


def _storage_key(t: Tensor) -> tuple:
    return (
        t.device,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def tie_aliases(module: nn.Module) -> dict[str, list[str]]:
    """Make parameters that alias one storage the same Parameter; {kept name: every name}.

    Only names whose tensors share storage, offset, shape and strides are tied: a view of part
    of another parameter is a different thing and is left alone."""
    first: dict[tuple, tuple[str, nn.Parameter]] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        key = _storage_key(p)
        if key not in first:
            first[key] = (name, p)
            continue
        kept, shared = first[key]
        aliases.setdefault(kept, [kept]).append(name)
        if p is not shared:
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            setattr(owner, attr, shared)
    return aliases


def select_parameters(
    module: nn.Module, patterns: Sequence[str] | None
) -> list[tuple[str, nn.Parameter]]:
    """Named parameters whose names match any of the fnmatch patterns (all when None).

    Each Parameter appears once, under its first name; a pattern matching any of a tied
    parameter's names selects it."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if patterns:
        every = _names_by_parameter(module)
        named = [
            (n, p)
            for n, p in named
            if any(fnmatch.fnmatchcase(alias, pat) for alias in every[id(p)] for pat in patterns)
        ]
        if not named:
            available = ", ".join(n for n, _ in module.named_parameters())
            raise ValueError(f"no parameter matches {list(patterns)}; parameters are: {available}")
    if not named:
        raise ValueError("the model has no trainable parameters")
    return named


def _names_by_parameter(module: nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for n, p in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    return names


def parameter_blocks(module: nn.Module, patterns: Sequence[str] | None = None) -> dict[str, list]:
    """Group the selected parameters by the module that owns them (one block per layer)."""
    blocks: dict[str, list[str]] = {}
    for name, _ in select_parameters(module, patterns):
        owner = name.rsplit(".", 1)[0] if "." in name else name
        blocks.setdefault(owner, []).append(name)
    return blocks
