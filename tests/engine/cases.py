"""The dense reference cases the engine tests share: each small float64 model of
tests.engine.models with its exact Hessian and spectrum, computed once per test session.

A dense Hessian of the transformer or the CNN takes seconds, and a dozen tests compare with
the same few; `dense_case(name)` computes each once and hands every test its own copy, with a
fresh problem built the same way (`DenseCase.problem`). tests/engine/conftest.py turns
`MODELS` into the parametrised `dense` fixture."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.engine.problem import HessianProblem
from tests.engine.models import SmallCNN, data, make
from tests.engine.reference import dense_hessian

#: the models every backend and estimator is checked on
MODELS = ("mlp_tanh", "mlp_relu", "cnn_bn", "tied", "residual", "transformer")


@dataclass(frozen=True)
class DenseCase:
    """Model `name` (seeded with `seed`), its exact float64 Hessian and eigenvalues
    (ascending)."""

    name: str
    seed: int
    hessian: Tensor
    eigenvalues: Tensor

    def problem(self) -> HessianProblem:
        """A fresh problem of this case (its own model and batches), as the reference's."""
        model, batches, loss = make(self.name, self.seed)
        return HessianProblem(model, batches, loss)

    @property
    def top(self) -> Tensor:
        """The eigenvalues, largest first."""
        return self.eigenvalues.flip(0)


@functools.cache
def _reference(name: str, seed: int) -> tuple[Tensor, Tensor]:
    model, batches, loss = make(name, seed)
    H = dense_hessian(HessianProblem(model, batches, loss))
    return H, torch.linalg.eigvalsh(H)


def dense_case(name: str, seed: int = 0) -> DenseCase:
    """Case `name`, its Hessian computed on first use; the tensors are the test's own."""
    H, eigenvalues = _reference(name, seed)
    return DenseCase(name, seed, H.clone(), eigenvalues.clone())


def float32_case(name: str, seed: int = 0) -> tuple[HessianProblem, Tensor]:
    """Model `name` in float32 with its float32 batches, and the exact (float64) Hessian of
    that float32 model: what a float32 measure is checked against. `cnn_big_data` is the CNN
    on 1000 examples, where the products' rounding grows with the data."""
    if name == "cnn_big_data":
        torch.manual_seed(seed)
        model, loss = SmallCNN().double(), "cross_entropy"
        batches = [data(1000, (1, 6, 6), 3, seed)]
    else:
        model, batches, loss = make(name, seed)
    m32 = model.float()
    b32 = [(x.float(), y) for x, y in batches]
    b64 = [(x.double(), y) for x, y in b32]
    H = dense_hessian(HessianProblem(copy.deepcopy(m32).double(), b64, loss))
    return HessianProblem(m32, b32, loss), H
