"""The objective every measure looks at: the mean loss over a whole dataset.

    L(w) = Σ_b (n_b / N) · ℓ_b(w),      ℓ_b = mean loss over the n_b examples of batch b

so uneven batches (500 + 12 examples) give exactly the loss of one batch of 512. The Hessian of
every measure is ∇²L with respect to a chosen block of parameters (all of them by default).

The model runs in eval mode unless asked otherwise: dropout off, BatchNorm on its running
statistics, so the Hessian is a property of the weights and not of how the data was batched.
Train mode is allowed; it warns, because the result then depends on batch composition, and the
problem restores BatchNorm's running statistics afterwards so the caller's model is unchanged.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

LossName = Literal["cross_entropy", "mse"]
Mode = Literal["eval", "train"]


class TrainModeWarning(UserWarning):
    """Raised as a warning when curvature is measured in train mode."""


@dataclass(frozen=True)
class Batch:
    inputs: Tensor
    targets: Tensor

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


def as_module(model: object) -> nn.Module:
    """Accept an nn.Module, a TorchScript module or a torch.export ExportedProgram."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    if isinstance(model, nn.Module):  # includes torch.jit.ScriptModule
        return model
    raise TypeError(
        f"expected an nn.Module, a TorchScript module or an ExportedProgram, got {type(model)!r}"
    )


@contextlib.contextmanager
def second_order_kernels() -> Iterator[None]:
    """Kernels that are twice differentiable, for every forward pass that is.

    - Attention through the math kernel: the fused CPU/GPU kernels have no double backward.
    - nn.MultiheadAttention's eval "fast path" off: under torch.func transforms it is taken
      (the wrapped parameters do not report requires_grad) and its derivatives are wrong.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def is_scripted(module: nn.Module) -> bool:
    """TorchScript modules support double backward but not torch.func."""
    return isinstance(module, torch.jit.ScriptModule)


def loss_function(name: LossName) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-batch mean loss. MSE averages over every element, as torch's default does."""
    if name == "cross_entropy":
        return nn.functional.cross_entropy
    if name == "mse":

        def mse(outputs: Tensor, targets: Tensor) -> Tensor:
            return nn.functional.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs))

        return mse
    raise ValueError(f"unknown loss {name!r}; expected 'cross_entropy' or 'mse'")


def select_parameters(
    module: nn.Module, patterns: Sequence[str] | None
) -> list[tuple[str, nn.Parameter]]:
    """Named parameters whose names match any of the fnmatch patterns (all when None).

    Shared weights appear once: named_parameters() de-duplicates tied tensors, so the Hessian
    of a model with shared weights is taken with respect to the shared tensor, as it should be.
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if patterns:
        named = [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
        if not named:
            available = ", ".join(n for n, _ in module.named_parameters())
            raise ValueError(f"no parameter matches {list(patterns)}; parameters are: {available}")
    if not named:
        raise ValueError("the model has no trainable parameters")
    return named


def parameter_blocks(module: nn.Module, patterns: Sequence[str] | None = None) -> dict[str, list]:
    """Group the selected parameters by the module that owns them (one block per layer)."""
    blocks: dict[str, list[str]] = {}
    for name, _ in select_parameters(module, patterns):
        owner = name.rsplit(".", 1)[0] if "." in name else name
        blocks.setdefault(owner, []).append(name)
    return blocks


class HessianProblem:
    """A model, a dataset split into batches, a loss, and the parameters to differentiate.

    Vectors over the selected parameters are flat tensors of length `dim`, in the order of
    `names`. Reductions across batches accumulate in float64.
    """

    def __init__(
        self,
        model: object,
        batches: Sequence[Batch | tuple[Tensor, Tensor]],
        loss: LossName = "cross_entropy",
        mode: Mode = "eval",
        parameters: Sequence[str] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.module = as_module(model)
        self.device = torch.device(device) if device is not None else self._model_device()
        self.module.to(self.device)
        self.batches = [
            b if isinstance(b, Batch) else Batch(inputs=b[0], targets=b[1]) for b in batches
        ]
        self.batches = [
            Batch(b.inputs.to(self.device), b.targets.to(self.device)) for b in self.batches
        ]
        if not self.batches or any(b.size == 0 for b in self.batches):
            raise ValueError("the dataset is empty or holds an empty batch")
        self.loss_name: LossName = loss
        self.loss_fn = loss_function(loss)
        self.mode: Mode = mode
        self.mode_fixed_at_export = False
        self._buffer_snapshot = {k: v.clone() for k, v in self.module.named_buffers()}
        self._set_mode()
        named = select_parameters(self.module, parameters)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.num_examples = sum(b.size for b in self.batches)
        self.weights = [b.size / self.num_examples for b in self.batches]
        self.dtype = self.params[0].dtype
        self.parameter_patterns = list(parameters) if parameters else None

    # ----------------------------------------------------------------- setup
    def _model_device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def _set_mode(self) -> None:
        if self.mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {self.mode!r}")
        if self.mode == "train":
            warnings.warn(
                "measuring in train mode: BatchNorm uses batch statistics and dropout is "
                "active, so the result depends on how the data is batched",
                TrainModeWarning,
                stacklevel=3,
            )
        try:
            self.module.train(self.mode == "train")
        except NotImplementedError:
            # a torch.export module: its train/eval behaviour was fixed when it was exported
            self.mode_fixed_at_export = True

    def restore_buffers(self) -> None:
        """Undo the running-statistics updates that train-mode forward passes make."""
        with torch.no_grad():
            for k, v in self.module.named_buffers():
                if k in self._buffer_snapshot:
                    v.copy_(self._buffer_snapshot[k])

    def restrict(self, parameters: Sequence[str]) -> HessianProblem:
        """The same problem, differentiated only with respect to `parameters` (a block)."""
        return HessianProblem(
            self.module, self.batches, self.loss_name, self.mode, parameters, self.device
        )

    # ----------------------------------------------------------- flat vectors
    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        out, offset = [], 0
        for shape, n in zip(self.shapes, self.numels, strict=True):
            out.append(vector[offset : offset + n].view(shape))
            offset += n
        return out

    def parameter_vector(self) -> Tensor:
        return self.flatten([p.detach() for p in self.params]).clone()

    @contextlib.contextmanager
    def perturbed(self, delta: Tensor) -> Iterator[None]:
        """Temporarily add `delta` (flat) to the selected parameters; always restored."""
        originals = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, d in zip(self.params, self.unflatten(delta), strict=True):
                    p.add_(d.to(p.dtype))
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.params, originals, strict=True):
                    p.copy_(o)

    # --------------------------------------------------------------- losses
    def batch_outputs(self, batch: Batch) -> Tensor:
        with second_order_kernels(), self._frozen_running_stats():
            return self.module(batch.inputs)

    @contextlib.contextmanager
    def _frozen_running_stats(self) -> Iterator[None]:
        """In train mode, BatchNorm normalises with batch statistics without updating its
        running ones: an in-place update would invalidate kept gradient graphs (and change the
        caller's model). TorchScript modules cannot be switched; `restore_buffers` undoes
        their updates instead."""
        switched = []
        if self.mode == "train":
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    m.track_running_stats = False
                    switched.append(m)
        try:
            yield
        finally:
            for m in switched:
                m.track_running_stats = True

    def batch_loss(self, batch: Batch) -> Tensor:
        """Mean loss over one batch, with the graph attached."""
        return self.loss_fn(self.batch_outputs(batch), batch.targets)

    def evaluate(self) -> dict[str, float | None]:
        """Mean loss and accuracy (cross-entropy only) over the whole dataset, float64 sums."""
        total_loss = 0.0
        correct = 0
        with torch.no_grad():
            for batch, w in zip(self.batches, self.weights, strict=True):
                out = self.batch_outputs(batch)
                total_loss += w * float(self.loss_fn(out, batch.targets).double())
                if self.loss_name == "cross_entropy":
                    correct += int((out.argmax(dim=-1) == batch.targets).sum())
        accuracy = correct / self.num_examples if self.loss_name == "cross_entropy" else None
        return {"loss": total_loss, "accuracy": accuracy}

    def loss(self) -> float:
        return float(self.evaluate()["loss"])  # type: ignore[arg-type]

    def gradient(self) -> Tensor:
        """∇L over the whole dataset as a flat float64 vector."""
        total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        for batch, w in zip(self.batches, self.weights, strict=True):
            grads = torch.autograd.grad(self.batch_loss(batch), self.params, allow_unused=True)
            grads = [
                torch.zeros_like(p) if g is None else g
                for g, p in zip(grads, self.params, strict=True)
            ]
            total += w * self.flatten(grads).double()
        return total
