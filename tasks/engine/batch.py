"""One batch of examples: the inputs as the model takes them and the targets of the same
examples. The problem (tasks.engine.problem) and the streamed sources (tasks.engine.batches)
both build on it, so it sits below both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

#: what a model is called with: one tensor, positional tensors, or keyword tensors
Inputs = Tensor | tuple[Tensor, ...] | dict[str, Tensor]


def input_tensors(inputs: Inputs) -> list[Tensor]:
    """The tensors of `inputs` in order, whichever of the three forms they take."""
    if isinstance(inputs, Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    return list(inputs)


def map_inputs(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    """`fn` applied to every tensor of `inputs`, keeping their form (tensor, tuple or dict)."""
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: fn(v) for k, v in inputs.items()}
    return tuple(fn(v) for v in inputs)


@dataclass(frozen=True)
class Batch:
    """Inputs (a tensor, a tuple of positional tensors or a dict of keyword tensors, all with
    the examples on dim 0) and the targets of the same examples."""

    inputs: Inputs
    targets: Tensor

    @property
    def size(self) -> int:
        return int(input_tensors(self.inputs)[0].shape[0])

    def __iter__(self) -> Iterator[Any]:  # a batch unpacks as the pair (inputs, targets)
        return iter((self.inputs, self.targets))

    def __getitem__(self, index: int) -> Any:
        return (self.inputs, self.targets)[index]

    def to(self, device: torch.device) -> Batch:
        return Batch(map_inputs(self.inputs, lambda t: t.to(device)), self.targets.to(device))

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(map_inputs(self.inputs, lambda t: t[start:stop]), self.targets[start:stop])

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """One batch of all examples of `batches`, in order."""
        first = batches[0].inputs
        if isinstance(first, Tensor):
            inputs: Inputs = torch.cat([cast(Tensor, b.inputs) for b in batches])
        elif isinstance(first, Mapping):
            named = [cast(dict[str, Tensor], b.inputs) for b in batches]
            inputs = {k: torch.cat([d[k] for d in named]) for k in first}
        else:
            positional = [cast(tuple[Tensor, ...], b.inputs) for b in batches]
            inputs = tuple(torch.cat([t[i] for t in positional]) for i in range(len(first)))
        return Batch(inputs, torch.cat([b.targets for b in batches]))
