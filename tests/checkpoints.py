"""Checkpoints of a short SGD run, for trajectory tests: copies of one model along its path."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def sgd_checkpoints(
    model: nn.Module, x: Tensor, y: Tensor, lr: float, steps: list[int]
) -> list[nn.Module]:
    """Full-batch SGD on the mean cross-entropy; a deep copy of the model at each of `steps`
    (step 0 is the initial model). Deterministic: no data shuffling, no dropout."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out, step = [], 0
    for target in sorted(steps):
        while step < target:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
        out.append(copy.deepcopy(model).eval())
    return out
