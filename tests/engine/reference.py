"""The exact Hessian every engine estimate is checked against, computed apart from the
engine's own product code paths."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem, is_scripted


def dense_hessian(problem: HessianProblem) -> Tensor:
    """The exact Hessian (dim×dim, float64), independent of the HVP code paths above.

    nn.Modules: torch.autograd.functional.hessian of the size-weighted batch losses as a
    function of the flat parameter vector (functional_call), in the model's dtype — make the
    model float64 for an exact reference. Not torch.func.hessian: in torch 2.13 its
    forward-over-reverse differentiates nn.MultiheadAttention wrongly (20% off against finite
    differences, while every backend here agrees with them to 1e-10). TorchScript modules,
    which functional_call refuses: double backward against the identity's columns.
    """
    p = problem
    if is_scripted(p.module):
        op = HessianOperator(p, backend="cached")
        eye = torch.eye(p.dim, dtype=torch.float64, device=p.device)
        H = torch.stack([op.matvec(eye[:, i]) for i in range(p.dim)], dim=1)
        return 0.5 * (H + H.T)
    primal = p.flatten([q.detach() for q in p.params])
    module = copy.deepcopy(p.module)  # functional_call may untie aliased parameters

    def total_loss(flat: Tensor) -> Tensor:
        params = dict(zip(p.names, p.unflatten(flat), strict=True))
        total = 0.0
        for batch, w in zip(p.batches, p.weights, strict=True):
            total = total + w * p.loss_fn(p.forward(batch, module, params), batch.targets)
        return total

    H = torch.autograd.functional.hessian(total_loss, primal).double()
    return 0.5 * (H + H.T)
