"""The generalised Gauss–Newton matrix as a linear operator: v ↦ Gv, G = Σ_b (n_b/N) J_bᵀ H_b J_b.

With f_b(w) the model's outputs on batch b, J_b = ∂f_b/∂w and H_b = ∂²ℓ_b/∂f² the Hessian of
the batch's mean loss with respect to the outputs, the Hessian of L(w) = Σ_b (n_b/N) ℓ_b(w) is

    ∇²L = Σ_b (n_b/N) [ J_bᵀ H_b J_b + Σ_i (∂ℓ_b/∂f_i) ∇²f_i ],

and the GGN keeps the first term: the curvature of the loss seen through the network's
linearisation. For cross-entropy and MSE H_b ⪰ 0, so G is positive semi-definite; for
cross-entropy it equals the Fisher information of the model's predictive distribution, and its
rank is at most (outputs per example − 1)·N — Granziol's rank argument for the near-zero bulk.
At a point where the residuals ∂ℓ/∂f vanish (an interpolating MSE fit) G = ∇²L.

Each product, per batch (weighted by n_b/N exactly as the Hessian's, `problem.weights`):

1. Jv by the double-vjp trick: g(u) = Jᵀu is linear in u, so differentiating ⟨g(u), v⟩ with
   respect to u gives Jv (reverse mode only, so it works for any module autograd can
   differentiate twice, TorchScript included);
2. H_b (Jv) by double backward through the loss as a function of detached outputs;
3. Jᵀ(H_b Jv) by one more vector-Jacobian product through the outputs' graph.

Outputs go through `problem.batch_outputs` and the loss through `problem.loss_fn`, so whatever
the problem accepts as outputs (a tensor, or a structure of tensors) and targets, the GGN does
too: every floating-point tensor in the outputs that depends on the weights is a block of f.

Backends, as for the Hessian: "cached" keeps each batch's output graph and its Jᵀu graph
(small data), "per_batch" rebuilds them on every product. The model computes in its own dtype;
products are summed and returned in float64.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from tasks.engine.cancel import checkpoint
from tasks.engine.operator import CACHE_MAX_EXAMPLES, ProblemOperator
from tasks.engine.problem import Batch, HessianProblem


class _BatchGraph:
    """One batch's outputs f (with the graph to the weights), u, and g(u) = Jᵀu (with the graph
    to u), plus the loss as a function of detached outputs."""

    def __init__(self, problem: HessianProblem, batch: Batch) -> None:
        self.problem, self.batch = problem, batch
        outputs = problem.batch_outputs(batch)
        leaves, self.spec = pytree.tree_flatten(outputs)
        self.leaves = leaves
        self.live = [
            i
            for i, t in enumerate(leaves)
            if isinstance(t, Tensor) and t.is_floating_point() and t.requires_grad
        ]
        if not self.live:
            raise ValueError("the model's outputs do not depend on the selected parameters")
        self.fs = [leaves[i] for i in self.live]
        self.us = [torch.zeros_like(f, requires_grad=True) for f in self.fs]
        jtu = torch.autograd.grad(
            self.fs, problem.params, grad_outputs=self.us, create_graph=True, allow_unused=True
        )
        self.jtu = [(g, q) for g, q in zip(jtu, problem.params, strict=True)]
        self._loss_grads: tuple[list[Tensor], list[Tensor | None]] | None = None

    def jvp(self, pieces: list[Tensor]) -> list[Tensor]:
        """J v, one tensor per output block (v given per parameter)."""
        outs, dirs = [], []
        for (g, _), piece in zip(self.jtu, pieces, strict=True):
            if g is not None and g.requires_grad:
                outs.append(g)
                dirs.append(piece.to(g.dtype))
        if not outs:
            return [torch.zeros_like(f) for f in self.fs]
        jv = torch.autograd.grad(
            outs, self.us, grad_outputs=dirs, retain_graph=True, allow_unused=True
        )
        return [torch.zeros_like(f) if t is None else t for t, f in zip(jv, self.fs, strict=True)]

    def _loss_gradient(self) -> tuple[list[Tensor], list[Tensor | None]]:
        """∂ℓ_b/∂f at detached copies of the outputs, with its graph (built once per batch)."""
        if self._loss_grads is None:
            leaves = list(self.leaves)
            detached = [f.detach().requires_grad_(True) for f in self.fs]
            for i, d in zip(self.live, detached, strict=True):
                leaves[i] = d
            outputs = pytree.tree_unflatten(leaves, self.spec)
            loss = self.problem.loss_fn(outputs, self.batch.targets)
            grads = torch.autograd.grad(loss, detached, create_graph=True, allow_unused=True)
            self._loss_grads = (detached, list(grads))
        return self._loss_grads

    def loss_hvp(self, directions: list[Tensor]) -> list[Tensor]:
        """H_b d: the Hessian of the batch loss with respect to the outputs, times d."""
        detached, grads = self._loss_gradient()
        live = [(g, d) for g, d in zip(grads, directions, strict=True) if g is not None]
        live = [(g, d) for g, d in live if g.requires_grad]
        if not live:  # the loss is linear in the outputs
            return [torch.zeros_like(f) for f in self.fs]
        gs, ds = zip(*live, strict=True)
        hd = torch.autograd.grad(
            gs, detached, grad_outputs=ds, retain_graph=True, allow_unused=True
        )
        return [torch.zeros_like(f) if h is None else h for h, f in zip(hd, self.fs, strict=True)]

    def vjp(self, directions: list[Tensor]) -> list[Tensor]:
        """Jᵀ d, one tensor per parameter."""
        p = self.problem
        out = torch.autograd.grad(
            self.fs, p.params, grad_outputs=directions, retain_graph=True, allow_unused=True
        )
        return [torch.zeros_like(q) if t is None else t for t, q in zip(out, p.params, strict=True)]


class GGNOperator(ProblemOperator):
    """Matrix-free GGN of `problem`'s mean loss over its selected parameters.

    Same interface as HessianOperator: `dim`, `dtype` (float64), `device`, `hvps` (products so
    far, one per column), `seconds`, `backend`, `matvec`, `matmat`, `release`.
    """

    curvature = "ggn"

    def __init__(
        self,
        problem: HessianProblem,
        backend: str = "auto",
        cache_max_examples: int = CACHE_MAX_EXAMPLES,
    ) -> None:
        super().__init__(problem)
        if backend == "auto":
            small = problem.num_examples <= cache_max_examples or len(problem.batches) == 1
            backend = "cached" if small else "per_batch"
        if backend not in ("cached", "per_batch"):
            raise ValueError(
                f"hvp_backend {backend!r} is not available with curvature 'ggn'; use 'auto', "
                "'cached' or 'per_batch'"
            )
        self.backend: str = backend
        self._graphs: list[_BatchGraph] | None = None

    @torch.enable_grad()
    def matvec(self, v: Tensor) -> Tensor:
        """G v for a flat vector v; returns a flat float64 vector."""
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got {tuple(v.shape)}")
        start = time.perf_counter()
        out = self._product(v)  # train mode: forward passes run on private buffers
        self.hvps += 1
        self.seconds += time.perf_counter() - start
        return out

    def matmat(self, V: Tensor) -> Tensor:
        """G V for a dim×k matrix, column by column; float64."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}×k matrix, got {tuple(V.shape)}")
        return torch.stack([self.matvec(V[:, i]) for i in range(V.shape[1])], dim=1)

    def _product(self, v: Tensor) -> Tensor:
        p = self.problem
        pieces = p.unflatten(v.to(device=self.device, dtype=p.dtype))
        out = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        if self.backend == "cached" and self._graphs is None:
            self._graphs = [_BatchGraph(p, b) for b in p.batches]
        for i, (batch, w) in enumerate(zip(p.batches, p.weights, strict=True)):
            checkpoint()  # a cancel stops the run between batches
            graph = self._graphs[i] if self._graphs is not None else _BatchGraph(p, batch)
            gv = graph.vjp(graph.loss_hvp(graph.jvp(pieces)))
            out += w * p.flatten(gv).double()
        return out
