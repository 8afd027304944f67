"""Weights at initialisation, w₀: check they belong to the model and lay them out flat.

Distances from initialisation (‖w − w₀‖, the KL term of a PAC-Bayes bound with prior centred
at w₀) compare tensors coordinate by coordinate, so w₀ must name the same parameters with the
same shapes as the model. A checkpoint of another architecture, or one exported differently,
would otherwise give a meaningless number instead of an error.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from tasks.engine.problem import HessianProblem


class InitialParamsMismatch(ValueError):
    """w₀ does not fit the model: a missing or unknown name, or a different shape."""


def check_initial_params(module: nn.Module, initial: Mapping[str, Tensor]) -> None:
    """Refuse w₀ unless it holds every trainable parameter of `module` with the same shape
    and names nothing the module lacks. Raises InitialParamsMismatch naming the first fault.

    Buffers (BatchNorm running statistics) may be present and are ignored, so a plain
    `state_dict()` of the initial model is accepted; tied weights may appear under each name.
    """
    params = dict(module.named_parameters(remove_duplicate=False))
    buffers = {n for n, _ in module.named_buffers(remove_duplicate=False)}
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    missing = [n for n in trainable if n not in initial]
    if missing:
        raise InitialParamsMismatch(
            f"the initial parameters lack {len(missing)} of the model's parameters "
            f"(first: {missing[0]!r}); the model has {', '.join(trainable)}"
        )
    unknown = [n for n in initial if n not in params and n not in buffers]
    if unknown:
        raise InitialParamsMismatch(
            f"the initial parameters name {unknown[0]!r}, which the model does not have; "
            f"the model has {', '.join(trainable)}"
        )
    for name, t in initial.items():
        if name in buffers:
            continue
        if not isinstance(t, Tensor):
            raise InitialParamsMismatch(f"initial parameter {name!r} is not a tensor")
        if tuple(t.shape) != tuple(params[name].shape):
            raise InitialParamsMismatch(
                f"initial parameter {name!r} has shape {tuple(t.shape)} but the model's has "
                f"{tuple(params[name].shape)}"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InitialParamsMismatch(f"initial parameter {name!r} holds NaN or Inf values")


def initial_vector(problem: HessianProblem, initial: Mapping[str, Tensor]) -> Tensor:
    """w₀ over `problem`'s selected parameters, flat, in `problem.names` order."""
    missing = [n for n in problem.names if n not in initial]
    if missing:
        raise InitialParamsMismatch(f"the initial parameters lack {missing[0]!r}")
    parts = []
    for name, shape in zip(problem.names, problem.shapes, strict=True):
        t = initial[name]
        if tuple(t.shape) != tuple(shape):
            raise InitialParamsMismatch(
                f"initial parameter {name!r} has shape {tuple(t.shape)}, the model's {tuple(shape)}"
            )
        parts.append(t.detach().to(device=problem.device, dtype=problem.dtype).reshape(-1))
    return torch.cat(parts)
