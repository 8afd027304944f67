"""The Hessian as a linear operator: v ↦ Hv, with H = ∇²L of the dataset's mean loss.

    L(w) = Σ_b (n_b / N) · ℓ_b(w)   ⇒   Hv = Σ_b (n_b / N) · ∇(∇ℓ_b · v)

Every estimator (Lanczos, Hutchinson, Hutch++, SLQ) sees only this operator, so the way a
Hessian-vector product (HVP) is computed is chosen in one place:

- "cached": one forward + backward with `create_graph=True` per batch, once; each HVP is then
  one `autograd.grad(g·v)` through the kept graph (`retain_graph=True`). Cheapest per HVP
  (1.25× a gradient for a small MLP on CPU, 1.5× for a CNN: PyHessian's cost, whose products
  are the same call) but holds every batch's graph in memory, so "auto" takes it
  only when the data is small, not streamed, and the graphs (measured on one batch, scaled to
  the dataset) fit in half the memory the device has available.
- "per_batch": forward, backward and double backward for each batch on each HVP. Memory of
  one batch; about 1.5× slower than cached.
- "func": torch.func forward-over-reverse, jvp(grad(ℓ)), with `vmap` over the columns in
  `matmat`. Not available for TorchScript modules (functional_call refuses them).

The model computes in its own dtype (float32 usually); the per-batch products are summed in
float64, a parameter at a time into one float64 vector, and returned as float64, so the
Lanczos recurrences downstream stay in float64.
"""

from __future__ import annotations

import copy
import time
from typing import Literal

import torch
from torch import Tensor

from tasks.engine.batches import available_bytes
from tasks.engine.cancel import checkpoint
from tasks.engine.problem import HessianProblem, is_scripted

Backend = Literal["auto", "cached", "per_batch", "func"]

#: "auto" keeps the gradient graphs of all batches when the dataset holds at most this many
#: examples (or is one batch); beyond that the graphs may not fit in memory.
CACHE_MAX_EXAMPLES = 4096

#: ... and when the estimated graphs need at most this share of the device's available memory.
GRAPH_SHARE = 0.5


class ProblemOperator:
    """What every matrix-free curvature operator over a problem records: its size (`dim`), the
    dtype its products come back in (float64), the device, and the products computed so far
    (`hvps`, one per column) with the seconds spent in them."""

    def __init__(self, problem: HessianProblem) -> None:
        self.problem = problem
        self.dim = problem.dim
        self.dtype = torch.float64
        self.device = problem.device
        self.hvps = 0
        self.seconds = 0.0


class HessianOperator(ProblemOperator):
    """Matrix-free Hessian of `problem`'s mean loss over its selected parameters.

    Attributes: `dim` (number of parameters), `dtype` (float64: what matvec returns),
    `hvps` (products computed so far, one per column), `seconds` (time spent in them),
    `backend` (the one actually used).
    """

    def __init__(
        self,
        problem: HessianProblem,
        backend: Backend | str = "auto",
        cache_max_examples: int = CACHE_MAX_EXAMPLES,
    ) -> None:
        super().__init__(problem)
        scripted = is_scripted(problem.module)
        self.graph_estimate: int | None = None
        if backend == "auto":
            backend = self._auto(cache_max_examples)
        if backend == "func" and scripted:
            raise ValueError(
                "the 'func' HVP backend needs torch.func, which TorchScript modules do not "
                "support; use 'cached' or 'per_batch' (double backward)"
            )
        if backend == "func" and problem.mode == "train":
            raise ValueError("the 'func' HVP backend runs in eval mode only")
        if backend not in ("cached", "per_batch", "func"):
            raise ValueError(f"unknown HVP backend {backend!r}")
        self.backend: str = backend
        self._grads: list[list[Tensor | None]] | None = None
        self._live: list[tuple[tuple[Tensor, ...], list[int]]] | None = None
        self._direction: Tensor | None = None
        self._direction_pieces: list[Tensor] = []
        self._func_module: torch.nn.Module | None = None
        self._forward_ad = True

    def _auto(self, cache_max_examples: int) -> str:
        """'cached' when the data is small, is not streamed, and every batch's gradient graph
        fits: the graph of the first batch is built once and the bytes autograd saves for it
        (plus its gradients) are counted, scaled by examples to the whole dataset, and
        compared with GRAPH_SHARE of the memory the device has available."""
        p = self.problem
        small = p.num_examples <= cache_max_examples or len(p.batches) == 1
        if not small or getattr(p.batches, "streaming", False):
            return "per_batch"
        first = p.batches[0]
        per_batch = graph_bytes(self, first)
        self.graph_estimate = int(per_batch * p.num_examples / first.size)
        fits = self.graph_estimate <= GRAPH_SHARE * available_bytes(self.device)
        return "cached" if fits else "per_batch"

    # ------------------------------------------------------------------ public
    @torch.enable_grad()
    def matvec(self, v: Tensor) -> Tensor:
        """H v for a flat vector v (any float dtype); returns a flat float64 vector."""
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got {tuple(v.shape)}")
        start = time.perf_counter()  # train mode: forward passes run on private buffers
        if self.backend == "cached":
            out = self._hvp_cached(v)
        elif self.backend == "per_batch":
            out = self._hvp_per_batch(v)
        else:
            out = self._hvp_func(v.reshape(self.dim, 1))[:, 0]
        self.hvps += 1
        self.seconds += time.perf_counter() - start
        return out

    @torch.enable_grad()
    def matmat(self, V: Tensor) -> Tensor:
        """H V for a dim×k matrix; float64. The func backend batches the k columns (vmap)."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}×k matrix, got {tuple(V.shape)}")
        if self.backend != "func":
            return torch.stack([self.matvec(V[:, i]) for i in range(V.shape[1])], dim=1)
        start = time.perf_counter()
        out = self._hvp_func(V)
        self.hvps += V.shape[1]
        self.seconds += time.perf_counter() - start
        return out

    # ------------------------------------------------------------- internals
    def _zero(self) -> Tensor:
        return torch.zeros(self.dim, dtype=torch.float64, device=self.device)

    def _directions(self, v: Tensor) -> list[Tensor]:
        """v as one tensor per parameter, in the model's dtype on the device.

        The pieces are views of one buffer kept for the operator's life: each product costs
        one copy (cast and move together) instead of a cast and a slice-and-view per
        parameter. Safe to reuse: every product is flattened into a fresh vector before the
        next one overwrites the buffer."""
        if self._direction is None:
            p = self.problem
            self._direction = torch.empty(self.dim, dtype=p.dtype, device=self.device)
            self._direction_pieces = p.unflatten(self._direction)
        self._direction.copy_(v)
        return self._direction_pieces

    @staticmethod
    def _live_outputs(grads: list[Tensor | None]) -> tuple[tuple[Tensor, ...], list[int]]:
        """The gradient pieces that depend on the parameters, and their positions."""
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return tuple(grads[i] for i in live), live  # type: ignore[misc]

    def _double_backward(
        self,
        grads: list[Tensor | None],
        directions: list[Tensor],
        live: tuple[tuple[Tensor, ...], list[int]] | None = None,
        out: Tensor | None = None,
        weight: float = 1.0,
    ) -> Tensor:
        """out + weight·∇(g·v) through a gradient graph, as one vector-Jacobian product of g
        with v, written into the float64 `out` (a new one when None) a parameter at a time:
        no flat copy in the model's dtype is made.

        Passing v as `grad_outputs` differentiates Σ_k ⟨g_k, v_k⟩ without building that dot
        product into the graph. Hessian blocks that vanish come back as zeros. `live` is
        `_live_outputs(grads)`, computed once for a kept graph."""
        checkpoint()  # a cancel stops the run before each batch's backward pass
        p = self.problem
        outputs, index = live if live is not None else self._live_outputs(grads)
        if not outputs:  # the gradient does not depend on these parameters: H = 0
            return out if out is not None else self._zero()
        pieces = [directions[i] for i in index]
        pieces = [
            d if d.dtype == g.dtype else d.to(g.dtype) for d, g in zip(pieces, outputs, strict=True)
        ]
        hv = torch.autograd.grad(
            outputs, p.params, grad_outputs=pieces, retain_graph=True, allow_unused=True
        )
        first = out is None
        if out is None:
            out = torch.empty(self.dim, dtype=torch.float64, device=self.device)
        for target, h in zip(p.unflatten(out), hv, strict=True):
            if h is None:
                if first:
                    target.zero_()
            elif first:
                target.copy_(h)
                if weight != 1.0:
                    target.mul_(weight)
            else:
                target.add_(h, alpha=weight)
        return out

    def _batch_grads(self, batch) -> list[Tensor | None]:
        loss = self.problem.batch_loss(batch)
        return list(
            torch.autograd.grad(loss, self.problem.params, create_graph=True, allow_unused=True)
        )

    def _hvp_cached(self, v: Tensor) -> Tensor:
        if self._grads is None:
            self._grads = [self._batch_grads(b) for b in self.problem.batches]
            self._live = [self._live_outputs(grads) for grads in self._grads]
        assert self._live is not None
        directions = self._directions(v)
        out = None
        for grads, live, w in zip(self._grads, self._live, self.problem.weights, strict=True):
            out = self._double_backward(grads, directions, live, out, w)
        return out if out is not None else self._zero()

    def _hvp_per_batch(self, v: Tensor) -> Tensor:
        directions = self._directions(v)
        out = None
        for batch, w in zip(self.problem.batches, self.problem.weights, strict=True):
            out = self._double_backward(self._batch_grads(batch), directions, None, out, w)
        return out if out is not None else self._zero()

    def _hvp_func(self, V: Tensor) -> Tensor:
        """Forward-over-reverse: jvp of grad, vmapped over the k columns of V."""
        from torch.func import grad, jvp, vjp, vmap

        p = self.problem
        if self._func_module is None:
            # functional_call on a module with tied (aliased) parameters can leave the
            # original's parameters detached from its forward; work on a copy.
            self._func_module = copy.deepcopy(p.module)
        module = self._func_module
        V = V.to(device=self.device, dtype=p.dtype)
        primal = p.flatten([q.detach() for q in p.params])
        out = torch.zeros(self.dim, V.shape[1], dtype=torch.float64, device=self.device)
        for batch, w in zip(p.batches, p.weights, strict=True):

            def loss_of(flat: Tensor, batch=batch) -> Tensor:
                params = dict(zip(p.names, p.unflatten(flat), strict=True))
                return p.loss_fn(p.forward(batch, module, params), batch.targets)

            def hvp_fwd(col: Tensor, loss_of=loss_of) -> Tensor:
                return jvp(grad(loss_of), (primal,), (col,))[1]

            def hvp_rev(col: Tensor, loss_of=loss_of) -> Tensor:
                return vjp(grad(loss_of), primal)[1](col)[0]

            if self._forward_ad:
                try:
                    out += w * vmap(hvp_fwd, in_dims=1, out_dims=1)(V).double()
                    continue
                except NotImplementedError:
                    # some kernels (CPU flash attention) lack forward AD: reverse-over-reverse
                    self._forward_ad = False
            out += w * vmap(hvp_rev, in_dims=1, out_dims=1)(V).double()
        return out


def graph_bytes(op: HessianOperator, batch) -> int:
    """Bytes held by one batch's double-backward graph: every tensor autograd saves while the
    loss and its gradient (create_graph=True) are computed, each storage once, plus the
    gradients themselves; the parameters, which exist anyway, are not counted."""
    seen: dict[tuple, int] = {}
    own = {(q.untyped_storage().data_ptr(), q.device.type) for q in op.problem.module.parameters()}

    def pack(t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), t.device.type)] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[(id(t), "x")] = t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        grads = op._batch_grads(batch)
    total = sum(n for k, n in seen.items() if k not in own)
    return total + sum(g.numel() * g.element_size() for g in grads if g is not None)
