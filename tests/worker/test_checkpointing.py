"""Activation checkpointing of transformers layers (tasks.worker.loaders.huggingface.
checkpoint_layers): the products are the same with and without it, to float64 rounding, and
equal the dense float64 Hessian's; in eval and in train mode (the dropout masks are the
seeded ones in both passes)."""

from __future__ import annotations

import copy

import pytest
import torch

from tasks.engine.ggn import GGNOperator
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.worker.loaders.huggingface import checkpoint_layers
from tests import hf_checkpoints as H
from tests.engine.reference import dense_hessian

pytest.importorskip("transformers")

VOCAB, T = 11, 12


def tiny_lm(kind: str) -> torch.nn.Module:
    """A float64 causal LM small enough for a dense Hessian (a few hundred parameters)."""
    if kind == "gpt2":
        cfg = H.gpt2_config(vocab_size=VOCAB, n_embd=8, n_layer=2, n_head=2, n_positions=T)
        return H.build("GPT2LMHeadModel", cfg, seed=3).double()
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=T,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return H.build("LlamaForCausalLM", cfg, seed=3).double()


def batches() -> list:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (3, 2):
        ids = torch.randint(0, VOCAB, (n, T), generator=g)
        labels = ids.clone()
        labels[:, -2:] = -100
        out.append(({"input_ids": ids}, labels))
    return out


def problems(kind: str, mode: str = "eval") -> tuple[HessianProblem, HessianProblem]:
    plain = tiny_lm(kind)
    checkpointed = copy.deepcopy(plain)
    assert checkpoint_layers(checkpointed) == 2
    return tuple(  # type: ignore[return-value]
        HessianProblem(m, batches(), mode=mode, dropout_seed=5) for m in (plain, checkpointed)
    )


def products(op, vs: torch.Tensor) -> torch.Tensor:
    return torch.stack([op.matvec(v) for v in vs])


def saved_bytes(problem: HessianProblem) -> int:
    """Bytes autograd keeps from the forward pass of the first batch's loss."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        problem.batch_loss(next(iter(problem.batches)))
    return total


def test_the_forward_pass_keeps_less() -> None:
    plain, checkpointed = problems("gpt2")
    assert saved_bytes(checkpointed) < saved_bytes(plain) / 2


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_products_equal_with_and_without_and_the_dense_hessian(kind: str) -> None:
    plain, checkpointed = problems(kind)
    vs = torch.randn(3, plain.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for backend in ("cached", "per_batch"):
        a = products(HessianOperator(plain, backend=backend), vs)
        b = products(HessianOperator(checkpointed, backend=backend), vs)
        assert float((a - b).abs().max()) <= 1e-13 * float(a.abs().max()), backend
    a = products(GGNOperator(plain), vs)
    b = products(GGNOperator(checkpointed), vs)
    assert float((a - b).abs().max()) <= 1e-13 * float(a.abs().max())
    if kind == "gpt2":  # Llama's RMSNorm computes in float32 whatever the model's dtype
        dense = dense_hessian(plain)
        b = products(HessianOperator(checkpointed, backend="per_batch"), vs)
        want = vs @ dense
        assert float((b - want).norm() / want.norm()) <= 1e-12


def test_train_mode_dropout_masks_are_the_same_in_the_recomputation() -> None:
    plain, checkpointed = problems("gpt2", mode="train")
    assert plain.dropout_active
    got = [run_measure(p, "lambda_max", {"tol": 1e-10})["value"] for p in (plain, checkpointed)]
    assert got[1] == pytest.approx(got[0], rel=1e-10)
    vs = torch.randn(2, plain.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = products(HessianOperator(plain, backend="per_batch"), vs)
    b = products(HessianOperator(checkpointed, backend="per_batch"), vs)
    assert float((a - b).abs().max()) <= 1e-13 * float(a.abs().max())
