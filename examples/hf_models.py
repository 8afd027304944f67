"""A Hugging Face classifier and a language model, measured end to end.

Builds a small BERT classifier and a small GPT-2 language model with `transformers` (random
weights, nothing downloaded), writes them and their data to examples/out/hf_models/
(git-ignored), and asks the service for λmax of each:
- BERT as `save_pretrained` writes it (config.json + model.safetensors), no export step; its
  dataset holds `input_ids`, `attention_mask` and `labels`, recognised by name and passed to
  the model by keyword.
- GPT-2 as a language model: labels are the next tokens, -100 where a position is padding, so
  the loss is the mean over the real tokens of the whole dataset.

    .venv/bin/python examples/hf_models.py      # with `make run` serving on SHARPNESS_URL
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from sharpness_client import Client


def main() -> None:
    out = Path(__file__).parent / "out" / "hf_models"  # git-ignored
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (32, 17))
    labels = ids[:, 1:].copy()
    labels[:, -3:] = -100  # padding: not counted
    np.savez("lm.npz", input_ids=ids[:, :-1], labels=labels)
    np.savez("cls.npz", input_ids=ids, attention_mask=np.ones_like(ids), labels=ids[:, 0] % 2)

    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    bert.save_pretrained("bert")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2))

    with Client(os.environ.get("SHARPNESS_URL", "http://127.0.0.1:8000")) as client:
        models = {
            "bert": (client.models.upload("bert"), "cls.npz"),
            "gpt2": (client.models.from_pretrained(gpt2), "lm.npz"),
        }
        for name, (model, data) in models.items():
            job = client.measure(model, data, measures=["lambda_max"])
            result = job.results["lambda_max"]
            objective = result.diagnostics["objective"]
            print(
                f"{name}: lambda_max {result.value:.6g} over {objective['num_targets']} "
                f"counted targets ({objective['averaged_over']})"
            )


if __name__ == "__main__":
    main()
