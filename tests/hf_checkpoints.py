"""Tiny random-initialised Hugging Face models, saved as `save_pretrained` writes them.

Built from configs in the test (2 layers, hidden 32, vocabulary 100); nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

VOCAB = 100


def _quiet() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def bert_config(**overrides: Any) -> Any:
    from transformers import BertConfig

    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertConfig(**(kwargs | overrides))


def gpt2_config(**overrides: Any) -> Any:
    from transformers import GPT2Config

    kwargs = dict(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return GPT2Config(**(kwargs | overrides))


def build(cls_name: str, config: Any, seed: int = 0) -> torch.nn.Module:
    """A transformers model of class `cls_name`, random-initialised from `seed`, in eval mode."""
    import transformers

    _quiet()
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = getattr(transformers, cls_name)(config)
    # random biases and LayerNorm affines too, so a weight that is not loaded cannot hide
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def bert_seq(seed: int = 0) -> torch.nn.Module:
    return build("BertForSequenceClassification", bert_config(), seed)


def gpt2_lm(seed: int = 0) -> torch.nn.Module:
    return build("GPT2LMHeadModel", gpt2_config(), seed)


def save(model: torch.nn.Module, folder: Path, **kwargs: Any) -> Path:
    _quiet()
    model.save_pretrained(folder, **kwargs)
    return folder


def zip_folder(folder: Path, *, inside: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    """The folder as zip bytes; `inside` puts the files under one top folder."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{inside}{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(f"{inside}{name}", data)
    return buf.getvalue()


def config_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def token_batch(n: int = 5, t: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and an attention_mask with some padding at the end of each row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, t), generator=g)
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return ids, mask
