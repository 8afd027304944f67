"""Tiny encoder-decoder (T5, BART) and vision (ViT) models and the datasets a Hugging Face user
saves for them: built from small configs, nothing downloaded."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tests import hf_checkpoints as H

IGNORE = -100


def t5_config(**overrides: Any) -> Any:
    from transformers import T5Config

    kwargs = dict(
        vocab_size=H.VOCAB, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=2,
        num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return T5Config(**(kwargs | overrides))


def bart_config(**overrides: Any) -> Any:
    from transformers import BartConfig

    kwargs = dict(
        vocab_size=H.VOCAB, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
        decoder_ffn_dim=24, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
    )  # fmt: skip
    return BartConfig(**(kwargs | overrides))


def vit_config(**overrides: Any) -> Any:
    from transformers import ViTConfig

    kwargs = dict(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=24, num_labels=4,
    )  # fmt: skip
    return ViTConfig(**(kwargs | overrides))


def t5(seed: int = 0) -> torch.nn.Module:
    return H.build("T5ForConditionalGeneration", t5_config(), seed)


def bart(seed: int = 0) -> torch.nn.Module:
    return H.build("BartForConditionalGeneration", bart_config(), seed)


def vit(seed: int = 0) -> torch.nn.Module:
    return H.build("ViTForImageClassification", vit_config(), seed)


def seq2seq_arrays(model: torch.nn.Module, n: int = 5, src: int = 7, tgt: int = 6, seed: int = 2):
    """input_ids, attention_mask, decoder_input_ids, decoder_attention_mask and labels (-100
    on the targets' padding), the decoder inputs being the labels shifted as the model does."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, H.VOCAB, (n, src), generator=g)
    mask = torch.arange(src)[None] < torch.randint(src // 2, src + 1, (n,), generator=g)[:, None]
    labels = torch.randint(3, H.VOCAB, (n, tgt), generator=g)
    keep = torch.arange(tgt)[None] < torch.randint(2, tgt + 1, (n,), generator=g)[:, None]
    labels = torch.where(keep, labels, torch.full_like(labels, IGNORE))
    decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    return {
        "input_ids": ids.numpy(),
        "attention_mask": mask.long().numpy(),
        "decoder_input_ids": decoder_ids.numpy(),
        "decoder_attention_mask": np.ones_like(decoder_ids.numpy()),
        "labels": labels.numpy(),
    }


def reference_loss(model: torch.nn.Module, arrays: dict[str, np.ndarray], **params: torch.Tensor):
    """Token-mean cross-entropy over the non-ignored labels of the whole dataset, as one batch,
    with `params` (name → tensor) substituted: the model's own loss given its labels."""
    from torch.func import functional_call

    inputs = {k: torch.from_numpy(v) for k, v in arrays.items() if k not in ("labels", "label")}
    key = "labels" if "labels" in arrays else "label"
    y = torch.from_numpy(arrays[key])
    import inspect

    if "use_cache" in inspect.signature(model.forward).parameters:
        inputs["use_cache"] = False  # type: ignore[assignment]
    out = functional_call(model, params, args=(), kwargs=inputs)
    logits = out.logits.reshape(-1, out.logits.shape[-1])
    return torch.nn.functional.cross_entropy(logits, y.reshape(-1), ignore_index=IGNORE)
