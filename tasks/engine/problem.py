"""The objective every measure looks at: the mean loss over a whole dataset.

    L(w) = Σ_b (m_b / M) · ℓ_b(w),      ℓ_b = mean loss over the m_b counted targets of batch b

A counted target is one example's label for a classifier, one token position whose label is not
-100 for a language model, one element for `mse` (tasks.engine.losses says how each layout is
read). So uneven batches (500 + 12 examples) give exactly the loss of one batch of 512, and a
batch of padding counts for nothing. The Hessian of every measure is ∇²L with respect to a
chosen block of parameters (all of them by default), each tied weight once
(tasks.engine.parameters).

Inputs reach the model as the model expects them: one tensor, a tuple of positional inputs, or
a dict of keyword inputs (input_ids and attention_mask). Outputs may be a tensor, a tuple, a
dict or a Hugging Face ModelOutput: the logits are taken (`logits`, else the first tensor; an
`output_key` chooses another).

The model runs in eval mode unless asked otherwise: dropout off, BatchNorm on its running
statistics, so the Hessian is a property of the weights and not of how the data was batched.
Train mode is allowed; it warns, because the result then depends on batch composition. In
train mode every forward pass runs on private copies of the buffers, so BatchNorm normalises
with batch statistics, the running statistics are never changed by a measurement, and no
in-place update sits in autograd's way. A torch.export program has its mode written in its
graph: it is read from there and rewritten to the requested mode where the graph allows.

Dropout in train mode draws one fixed mask per batch: every forward pass runs on a fork of the
device's random generators seeded from (`dropout_seed`, the batch's contents), so the same batch
gets the same mask in every pass — both passes of one Hessian-vector product, every product,
every measure and every parameter block of a job. The loss is then a deterministic function of
the weights and its Hessian a fixed symmetric matrix; another `dropout_seed` is another draw.
The model's own generator state is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tasks.engine import exported
from tasks.engine.batch import Batch, Inputs, input_tensors
from tasks.engine.batches import DeviceBatches
from tasks.engine.cancel import checkpoint
from tasks.engine.losses import ClassDim, LossName, Objective
from tasks.engine.parameters import parameter_blocks, select_parameters, tie_aliases

__all__ = [
    "Batch",
    "HessianProblem",
    "Inputs",
    "LossName",
    "Mode",
    "TrainModeWarning",
    "as_module",
    "call_module",
    "is_scripted",
    "loss_function",
    "parameter_blocks",
    "second_order_kernels",
    "select_output",
    "select_parameters",
]

Mode = Literal["eval", "train"]


class TrainModeWarning(UserWarning):
    """Raised as a warning when curvature is measured in train mode."""


def call_module(module: nn.Module, inputs: Inputs) -> Any:
    """Call the model with its inputs as it expects them: one, positional, or by keyword."""
    if isinstance(inputs, Tensor):
        return module(inputs)
    if isinstance(inputs, Mapping):
        return module(**inputs)
    return module(*inputs)


def select_output(out: Any, key: str | None = None) -> Tensor:
    """The logits of whatever the model returned.

    A tensor is itself; a dict or ModelOutput gives `key`, else 'logits', else its first
    tensor; a tuple or list gives item `key` (an index) or its first tensor."""
    if isinstance(out, Tensor):
        if key not in (None, "0"):
            raise ValueError(f"output_key {key!r}: the model returns a single tensor")
        return out
    if isinstance(out, Mapping):
        if key is not None:
            if key not in out:
                raise ValueError(f"output_key {key!r}: the model's outputs are {list(out)}")
            return _as_tensor(out[key], key)
        if isinstance(out.get("logits"), Tensor):
            return out["logits"]
        for v in out.values():
            if isinstance(v, Tensor):
                return v
        raise ValueError(f"the model returns no tensor among {list(out)}")
    if isinstance(out, (tuple, list)):
        if key is not None:
            if not key.isdigit() or int(key) >= len(out):
                raise ValueError(
                    f"output_key {key!r}: the model returns a sequence of {len(out)} items; "
                    "give an index"
                )
            return _as_tensor(out[int(key)], key)
        for v in out:
            if isinstance(v, Tensor):
                return v
        raise ValueError("the model returns a sequence with no tensor in it")
    raise ValueError(f"the model returns {type(out).__name__}, not a tensor")


def _as_tensor(value: Any, key: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"output_key {key!r} is a {type(value).__name__}, not a tensor")
    return value


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
    """Per-batch mean loss over counted targets (tasks.engine.losses.Objective)."""
    return Objective(name)


def _buffer_slots(module: nn.Module) -> list[tuple[nn.Module, str, Tensor]]:
    return [
        (owner, name, buf)
        for owner in module.modules()
        for name, buf in list(owner.named_buffers(recurse=False))
        if buf is not None
    ]


def _has_dropout(module: nn.Module) -> bool:
    """Whether the model holds an active-able dropout layer (p > 0): nn.Dropout and its
    kin, or a dropout call in a torch.export graph."""
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
    return exported.has_dropout(module)


#: Moduli of the batch digest: values and positions are reduced below 2^16, so products stay
#: below 2^32 and a sum over fewer than 2^31 elements is exact in int64.
_VALUE_MOD, _POSITION_MOD = 65521, 65519


def _as_int64(t: Tensor) -> Tensor:
    """The elements of `t` as int64: integers as they are, floats by their bit pattern."""
    flat = t.detach().reshape(-1)
    if flat.is_floating_point() or flat.is_complex():
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        flat = flat.view(torch.float32) if flat.is_complex() else flat
        flat = flat.contiguous().view(bits[flat.element_size()])
    return flat.to(torch.int64)


def batch_key(batch: Batch) -> int:
    """A digest of a batch's contents (its input and target tensors, shapes and dtypes): the
    same batch gives the same key wherever and however often it is read. Computed with exact
    integer sums on the batch's device (one small copy to the host) and kept on the batch."""
    cached = batch.__dict__.get("_key")
    if cached is not None:
        return cached
    tensors = [*input_tensors(batch.inputs), batch.targets]
    sums = []
    for t in tensors:
        values = _as_int64(t).remainder(_VALUE_MOD)
        positions = torch.arange(values.numel(), device=values.device, dtype=torch.int64)
        weights = positions.remainder(_POSITION_MOD) + 1
        sums.append(torch.stack([values.sum(), (values * weights).sum()]))
    digest = torch.cat(sums).tolist() if sums else []
    shapes = [(tuple(t.shape), str(t.dtype)) for t in tensors]
    h = hashlib.blake2b(repr((shapes, digest)).encode(), digest_size=8)
    key = int.from_bytes(h.digest(), "little")
    object.__setattr__(batch, "_key", key)  # a frozen dataclass: cache beside its fields
    return key


def dropout_seed_for(dropout_seed: int, batch: Batch) -> int:
    """The seed of `batch`'s dropout mask under a job's `dropout_seed` (below 2^63)."""
    h = hashlib.blake2b(f"{int(dropout_seed)}:{batch_key(batch)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


class HessianProblem:
    """A model, a dataset split into batches, a loss, and the parameters to differentiate.

    `batches` is a list of Batch (or (inputs, targets) pairs), moved to the device at once, or
    a tasks.engine.batches.BatchSource, read lazily: kept on the device when it fits
    (`resident` forces either way), else streamed batch by batch on every pass.

    Vectors over the selected parameters are flat tensors of length `dim`, in the order of
    `names`. Reductions across batches accumulate in float64. `aliases` lists, for each tied
    parameter, every name it goes by; `mode_note` says where the mode came from when it was
    not simply set on the module. `dropout_seed` seeds the dropout masks of train mode (one
    per batch, fixed for every pass); `dropout_active` says whether the model draws any.
    """

    def __init__(
        self,
        model: object,
        batches: Sequence[Batch | tuple[Inputs, Tensor]],
        loss: LossName | Objective = "cross_entropy",
        mode: Mode = "eval",
        parameters: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        *,
        output_key: str | None = None,
        class_dim: ClassDim | None = None,
        resident: bool | None = None,
        dropout_seed: int = 0,
    ) -> None:
        self.module = as_module(model)
        self.aliases = tie_aliases(self.module)
        self.device = torch.device(device) if device is not None else self._model_device()
        self.module.to(self.device)
        # a list is moved to the device now; a BatchSource (tasks.engine.batches) too when it
        # fits, else its batches are read and moved one at a time on every pass
        self.batches = DeviceBatches(batches, self.device, resident)
        sizes = self.batches.sizes()
        if not sizes or any(n == 0 for n in sizes):
            raise ValueError("the dataset is empty or holds an empty batch")
        self.objective = loss if isinstance(loss, Objective) else Objective(loss, class_dim)
        self.loss_name: LossName = self.objective.name
        self.loss_fn = self.objective
        self.output_key = output_key
        self.mode: Mode = mode
        self.mode_fixed_at_export = False
        self.mode_note: str | None = None
        self._slots = _buffer_slots(self.module)
        self._buffer_snapshot = {k: v.clone() for k, v in self.module.named_buffers()}
        self._set_mode()
        self.dropout_seed = int(dropout_seed)
        if not 0 <= self.dropout_seed < 2**63:
            raise ValueError(f"dropout_seed must be in [0, 2^63), got {dropout_seed}")
        self._dropout_layers = _has_dropout(self.module)
        # set when a train-mode forward pass draws random numbers (dropout inside a model's
        # own code, F.dropout): shared with every restriction of this problem
        self._draws: dict[str, bool] = {"seen": False}
        named = select_parameters(self.module, parameters)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.counts = [self.objective.count(t) for t in self.batches.targets()]
        self.num_examples, self.num_targets = self._totals(sum(sizes), sum(self.counts))
        if self.num_targets == 0:
            raise ValueError("no target is counted: every label is -100 (ignored)")
        self.weights = [c / self.num_targets for c in self.counts]
        self.dtype = self.params[0].dtype
        self.parameter_patterns = list(parameters) if parameters else None

    #: Processes measuring this problem together, and this one's place among them: a
    #: tasks.engine.distributed.DistributedProblem holds a shard of the data and sums over all.
    world_size = 1
    rank = 0

    # ----------------------------------------------------------------- setup
    def _totals(self, examples: int, targets: int) -> tuple[int, int]:
        """Examples and counted targets of the whole dataset (one process: its own)."""
        return examples, targets

    def across_ranks(self, operator: Any) -> Any:
        """The operator whose products are over the whole dataset: itself in one process."""
        return operator

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
                "active (one mask per batch, seeded by dropout_seed), so the result depends on "
                "how the data is batched",
                TrainModeWarning,
                stacklevel=3,
            )
        try:
            self.module.train(self.mode == "train")
            return
        except NotImplementedError:
            pass  # a torch.export module: its mode is written in its graph
        before = exported.graph_mode(self.module)
        after = exported.apply_mode(self.module, self.mode)
        if after is None:
            self.mode_note = "the exported graph holds no mode-dependent layer"
        elif after == self.mode:
            if before != self.mode:
                self.mode_note = (
                    f"the exported graph computed in {before} mode; rewritten to {self.mode}"
                )
        else:
            self.mode_fixed_at_export = True
            self.mode_note = (
                f"the exported graph computes in {after} mode and cannot be switched; "
                f"measured in {after} mode, not {self.mode!r}"
            )
            self.mode = "train" if after == "train" else self.mode

    @property
    def dropout_active(self) -> bool:
        """Train mode on a model that draws random numbers in its forward pass (dropout): its
        masks are then the seeded ones of `dropout_seed`."""
        return self.mode == "train" and (self._dropout_layers or self._draws["seen"])

    def restore_buffers(self) -> None:
        """Put back the buffers as they were when the problem was made (a safety net: forward
        passes in train mode run on private copies and never change them)."""
        with torch.no_grad():
            for k, v in self.module.named_buffers():
                if k in self._buffer_snapshot:
                    v.copy_(self._buffer_snapshot[k])

    def restrict(self, parameters: Sequence[str]) -> HessianProblem:
        """The same problem, differentiated only with respect to `parameters` (a block)."""
        sub = type(self).__new__(type(self))
        sub.__dict__.update(self.__dict__)
        named = select_parameters(self.module, parameters)
        sub.names = [n for n, _ in named]
        sub.params = [p for _, p in named]
        sub.shapes = [p.shape for p in sub.params]
        sub.numels = [p.numel() for p in sub.params]
        sub.dim = sum(sub.numels)
        sub.dtype = sub.params[0].dtype
        sub.parameter_patterns = list(parameters)
        return sub

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

    # --------------------------------------------------------------- forward
    @contextlib.contextmanager
    def _private_buffers(self) -> Iterator[None]:
        """In train mode, run on fresh copies of every buffer: BatchNorm's running-statistics
        update lands on the copy, so it neither changes the model nor invalidates a kept
        gradient graph (autograd saves the running statistics it was given)."""
        if self.mode != "train" or not self._slots:
            yield
            return
        for owner, name, original in self._slots:
            setattr(owner, name, original.clone())
        try:
            yield
        finally:
            for owner, name, original in self._slots:
                setattr(owner, name, original)

    def _rng_state(self) -> Tensor:
        if self.device.type == "cuda":
            return torch.cuda.get_rng_state(self.device)
        return torch.random.get_rng_state()

    @contextlib.contextmanager
    def _seeded(self, batch: Batch) -> Iterator[None]:
        """In train mode, run on a fork of the random generators (the CPU's and the model's
        CUDA device's) seeded from (dropout_seed, the batch): the same batch draws the same
        dropout mask on every pass, and the generators are left as they were."""
        if self.mode != "train":
            yield
            return
        seed = dropout_seed_for(self.dropout_seed, batch)
        cuda = self.device.type == "cuda"
        devices = [self.device] if cuda else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.default_generator.manual_seed(seed)
            if cuda:
                index = self.device.index
                index = torch.cuda.current_device() if index is None else index
                torch.cuda.default_generators[index].manual_seed(seed)
            before = None if self._draws["seen"] else self._rng_state()
            yield
            if before is not None and not torch.equal(before, self._rng_state()):
                self._draws["seen"] = True

    def forward(
        self,
        batch: Batch,
        module: nn.Module | None = None,
        params: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """The logits of `batch`: through `module` (default the problem's), with `params`
        substituted by torch.func.functional_call when given. In train mode the dropout mask
        is the batch's seeded one (see `_seeded`)."""
        checkpoint()  # a cancel stops the run before any batch's forward pass
        module = self.module if module is None else module
        with second_order_kernels(), self._private_buffers(), self._seeded(batch):
            if params is None:
                out = call_module(module, batch.inputs)
            else:
                from torch.func import functional_call

                if self.mode == "train":  # fresh buffers for this pass, as above
                    fresh = {k: b.clone() for k, b in module.named_buffers()}
                    params = {**fresh, **params}
                inputs = batch.inputs
                if isinstance(inputs, Mapping):
                    out = functional_call(module, params, (), dict(inputs))
                else:
                    args = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
                    out = functional_call(module, params, args)
        return select_output(out, self.output_key)

    def batch_outputs(self, batch: Batch) -> Tensor:
        return self.forward(batch)

    # --------------------------------------------------------------- losses
    def batch_loss(self, batch: Batch) -> Tensor:
        """Mean loss over one batch's counted targets, with the graph attached."""
        return self.loss_fn(self.batch_outputs(batch), batch.targets)

    def evaluate(self) -> dict[str, float | None]:
        """Mean loss and accuracy (cross-entropy only) over the whole dataset's counted
        targets, float64 sums."""
        total_loss = 0.0
        correct = 0
        with torch.no_grad():
            for batch, w in zip(self.batches, self.weights, strict=True):
                out = self.batch_outputs(batch)
                total_loss += w * float(self.loss_fn(out, batch.targets).double())
                if self.loss_name == "cross_entropy":
                    correct += self.objective.correct(out, batch.targets)
        accuracy = correct / self.num_targets if self.loss_name == "cross_entropy" else None
        return {"loss": total_loss, "accuracy": accuracy}

    def loss(self) -> float:
        return float(self.evaluate()["loss"])  # type: ignore[arg-type]

    def gradient(self) -> Tensor:
        """∇L over the whole dataset as a flat float64 vector."""
        total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        for batch, w in zip(self.batches, self.weights, strict=True):
            raw = torch.autograd.grad(self.batch_loss(batch), self.params, allow_unused=True)
            grads = [
                torch.zeros_like(p) if g is None else g
                for g, p in zip(raw, self.params, strict=True)
            ]
            total += w * self.flatten(grads).double()
        return total

    def describe(self) -> dict[str, Any]:
        """How the objective was taken, for a result's diagnostics."""
        out: dict[str, Any] = {
            **self.objective.describe(),
            "num_examples": self.num_examples,
            "num_targets": self.num_targets,
        }
        if self.aliases:
            out["tied_parameters"] = self.aliases
        return out
