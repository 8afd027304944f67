"""The Llama-shaped causal language model the memory benchmarks measure (bench.memory,
bench.large_lm, bench.allocator): `transformers.LlamaForCausalLM`, float32, random weights,
untied embeddings, SwiGLU width 8/3 of the hidden size, one head per 64 dimensions."""

from __future__ import annotations

from typing import Any


def llama(hidden: int, layers: int, vocab: int, seed: int = 0, **config: Any) -> Any:
    """The model of `hidden` × `layers` over `vocab` tokens (eval mode), seeded; `config`
    adds LlamaConfig fields (attn_implementation="eager" for double backward on CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = max(hidden // 64, 1)
    shape = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        **config,
    )
    return LlamaForCausalLM(shape).float().eval()
