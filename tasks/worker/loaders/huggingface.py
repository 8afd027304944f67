"""Build a Hugging Face model from its config and load its safetensors weights, running no
code that came with the upload.

The stored blob is either a zip of a `save_pretrained` folder or the bare `model.safetensors`
with its config.json kept in the blob's metadata. The model class is chosen here, never by the
checkpoint: the config class comes from transformers' own table for the config's `model_type`
(a type transformers does not ship is refused, so is an `auto_map`), the model class from the
table of the requested head (sequence or token classification, causal LM, masked LM, image
classification, encoder-decoder LM: `...ForConditionalGeneration` of T5, BART, MBart, Pegasus,
Marian, which take `decoder_input_ids` beside `input_ids` and return per-token logits that the
engine compares with the -100-padded labels). Only config.json and the safetensors files are
copied to a private folder that `from_pretrained` reads with `use_safetensors=True`,
`trust_remote_code=False` and `local_files_only=True`: no pickle, no hub, no custom code.
Missing or mis-shaped weights are refused instead of being randomly initialised.

Attention is built with the "eager" implementation: plain matmuls and softmax whose second
derivatives autograd computes exactly (the fused kernels need not support double backward).
The model returns a ModelOutput (return_dict=True) without a key/value cache; the engine takes
its `logits`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.checkpoint import checkpoint

from tasks.artifacts import formats, model_refs
from tasks.artifacts.hf_checkpoint import (
    CONFIG,
    INDEX,
    WEIGHTS,
    BadCheckpoint,
    head_of,
    layout,
    parse_config,
)
from tasks.engine.problem import second_order_kernels
from tasks.worker.errors import STOPS, LoadError, first_line
from tasks.worker.loaders.model import LoadedModel

# head → the name of transformers' table {model_type: class name} for it
_HEAD_TABLES = {
    "sequence_classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token_classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "masked_lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "image_classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "seq2seq_lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
}


def _refused(e: BadCheckpoint) -> LoadError:
    return LoadError("Unusable Hugging Face checkpoint", e.detail)


def _names(entry: Any) -> list[str]:
    return [entry] if isinstance(entry, str) else [n for n in entry or () if isinstance(n, str)]


def model_class(config: dict[str, Any], head: str, label: str) -> Any:
    """The transformers class for (model_type, head): a class transformers ships, or a 422."""
    import transformers  # deferred: only Hugging Face models need it (seconds to import)
    from transformers.models.auto import modeling_auto

    model_type = config["model_type"]
    table = getattr(modeling_auto, _HEAD_TABLES[head])
    candidates = _names(table.get(model_type))
    if not candidates:
        known = sorted(k for k, v in table.items() if _names(v))
        raise LoadError(
            "Unsupported Hugging Face model",
            f"{label}: transformers {transformers.__version__} has no {head} model for "
            f"model_type {model_type!r}; declare another head, or export the model with "
            f"torch.export. Model types with a {head} head include {', '.join(known[:12])}, ...",
        )
    declared = [a for a in config.get("architectures") or [] if a in candidates]
    name = declared[0] if declared else candidates[0]
    cls = getattr(transformers, name, None)
    if not (
        isinstance(cls, type)
        and issubclass(cls, transformers.PreTrainedModel)
        and cls.__module__.startswith("transformers.models.")
    ):
        raise LoadError("Unsupported Hugging Face model", f"{label}: no transformers class {name}")
    return cls


def build_config(config: dict[str, Any], label: str) -> Any:
    """transformers' own config class for the model_type, filled from the JSON."""
    import transformers  # deferred: only Hugging Face models need it (seconds to import)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise LoadError(
            "Unsupported Hugging Face model",
            f"{label}: model_type {model_type!r} is not built into transformers "
            f"{transformers.__version__}; code that comes with a checkpoint is never run, so "
            "export the model with torch.export instead",
        )
    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(config))
    except STOPS:
        raise
    except Exception as e:
        raise LoadError(
            "Bad Hugging Face config",
            f"{label}: config.json does not make a {model_type} config ({first_line(e)})",
        ) from e
    no_cache_config(cfg)  # no key/value cache in the outputs, the decoder's included
    cfg.return_dict = True
    return cfg


def no_cache_config(cfg: Any, seen: set[int] | None = None) -> None:
    """use_cache=False in a config and every config inside it (an encoder-decoder's decoder,
    a composite model's text_config, ...)."""
    seen = set() if seen is None else seen
    if id(cfg) in seen:
        return
    seen.add(id(cfg))
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = False
    for value in list(vars(cfg).values()):
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            no_cache_config(value, seen)


def no_cache(module: torch.nn.Module) -> None:
    """use_cache=False in the config of every submodule: a T5 or BART decoder keeps its own
    copy of the config, which setting the top-level one does not reach."""
    seen: set[int] = set()
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            no_cache_config(cfg, seen)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _stage_reference(path: Path, meta: dict[str, Any], label: str, folder: Path) -> dict:
    """A model registered by reference (tasks.worker.loaders.reference found and checked it):
    a save_pretrained folder, or a sharded index with config.json kept in the record."""
    try:
        if path.is_dir():
            ckpt = model_refs.folder_checkpoint(path, label)
            assert ckpt.config is not None  # folder_checkpoint requires it
            config = parse_config(ckpt.config.read_bytes(), label)
        else:
            ckpt = model_refs.sharded_checkpoint(path, label)
            config = parse_config(json.dumps(meta.get("config")), label, "config")
    except BadCheckpoint as e:
        raise _refused(e) from e
    for shard in ckpt.weights:
        _link(shard, folder / shard.name)
    if ckpt.index is not None:
        _link(ckpt.index, folder / INDEX)
    return config


def _stage_files(path: Path, meta: dict[str, Any], label: str, folder: Path) -> dict[str, Any]:
    """Copy config.json and the safetensors file(s) into `folder`; return the config dict."""
    if path.is_dir() or path.name.lower().endswith(model_refs.INDEX_SUFFIX):
        return _stage_reference(path, meta, label, folder)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                where = layout(zf, label)
                config = parse_config(zf.read(where.member(CONFIG)), label)
                members = [*where.weights] + ([where.index] if where.index else [])
                for member in members:
                    target = folder / member[len(where.root) :]
                    with zf.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except BadCheckpoint as e:
            raise _refused(e) from e
        except (zipfile.BadZipFile, OSError, KeyError) as e:
            raise LoadError("Corrupt model archive", f"{label}: unreadable zip ({e})") from e
        return config
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise LoadError(
            "Config missing",
            f"{label}: safetensors weights of a Hugging Face model need its config.json "
            "(upload it in the 'config' field, or zip the save_pretrained folder)",
        )
    try:
        config = parse_config(json.dumps(raw), label, "config")
    except BadCheckpoint as e:
        raise _refused(e) from e
    _link(path, folder / WEIGHTS)
    return config


def _checkpoint_numel(folder: Path) -> int:
    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = st.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= int(d)
                total += n
    return total


def transformers_logging() -> Any:
    from transformers.utils import logging  # deferred, as in model_class

    return logging


def _unique_numel(module: torch.nn.Module, ignored: list[re.Pattern[str]] | None = None) -> int:
    return sum(  # named_parameters() yields each once
        p.numel()
        for n, p in module.named_parameters()
        if not any(pattern.search(n) for pattern in ignored or ())
    )


def load_huggingface(p: Path, label: str, meta: dict[str, Any]) -> LoadedModel:
    """The stored Hugging Face checkpoint as an eval-mode nn.Module returning a ModelOutput."""
    with tempfile.TemporaryDirectory(prefix="hf-") as tmp:
        folder = Path(tmp)
        config = _stage_files(p, meta, label, folder)
        try:
            head = head_of(config, meta.get("head"), label)
        except BadCheckpoint as e:
            raise _refused(e) from e
        cfg = build_config(config, label)
        cls = model_class(config, head, label)
        cfg._attn_implementation = "eager"
        # Size the model from the config on the meta device (no memory) before building it:
        # a config that asks for more parameters than the weights hold is refused here.
        try:
            with torch.device("meta"):
                skeleton = cls(cfg)
        except STOPS:
            raise
        except Exception as e:
            raise LoadError(
                "Bad Hugging Face config",
                f"{label}: {cls.__name__} cannot be built from config.json ({first_line(e)})",
            ) from e
        # parameters the class never saves (Marian's sinusoidal positions) are rebuilt
        ignored = [re.compile(p) for p in getattr(cls, "_keys_to_ignore_on_save", None) or ()]
        need, have = _unique_numel(skeleton, ignored), _checkpoint_numel(folder)
        del skeleton
        if need > have:
            raise LoadError(
                "Weights do not fit the model",
                f"{label}: {cls.__name__} from this config.json has {need} parameters but the "
                f"safetensors hold {have} values; the weights belong to another model or head "
                "(declare the head the checkpoint was trained with)",
            )
        # causal LMs read a generation config from the folder; an empty one keeps it local
        (folder / "generation_config.json").write_text("{}")
        transformers_logging().disable_progress_bar()
        try:
            model, info = cls.from_pretrained(
                str(folder),
                config=cfg,
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
                output_loading_info=True,
                attn_implementation="eager",
                dtype="auto",
            )
        except STOPS:
            raise
        except Exception as e:
            raise LoadError(
                "Weights do not fit the model",
                f"{label}: transformers could not load the weights into {cls.__name__} "
                f"({type(e).__name__}: {first_line(e)})",
            ) from e
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        what = (
            f"missing {sorted(missing)[:5]}"
            if missing
            else f"shapes differ for {[m[0] if isinstance(m, tuple) else m for m in mismatched]}"
        )
        raise LoadError(
            "Weights do not fit the model",
            f"{label}: the safetensors do not fill {cls.__name__} ({what}); parameters are "
            "never initialised at random. Declare the head the checkpoint was trained with",
        )
    no_cache(model)
    if getattr(model.config, "is_encoder_decoder", False):
        _require_decoder_inputs(model)
    model.eval()
    return LoadedModel(model, formats.HUGGINGFACE, input_shape=None)


def _require_decoder_inputs(model: torch.nn.Module) -> None:
    """An encoder-decoder model called without decoder inputs raises instead of guessing
    them (BART would decode a shifted copy of its own input_ids; transformers makes them from
    labels, which the model is never given here). The worker supplies them from the labels
    (tasks.worker.datasets.fit_inputs_to_model). A forward pre-hook, so copies of the model
    check their own calls."""
    model.register_forward_pre_hook(_check_decoder_inputs, with_kwargs=True)


def _check_decoder_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    given = (
        kwargs.get("decoder_input_ids") is not None
        or kwargs.get("decoder_inputs_embeds") is not None
        or kwargs.get("labels") is not None  # transformers shifts them itself
        or len(args) >= 3  # (input_ids, attention_mask, decoder_input_ids, ...)
    )
    if not given:
        raise ValueError(
            f"{type(module).__name__} needs decoder_input_ids: the labels shifted as the "
            "model does (model.prepare_decoder_input_ids_from_labels(labels=labels))"
        )


class _Checkpointed:
    """A transformers layer's forward, its activations dropped after the forward pass and
    recomputed in the backward pass (torch.utils.checkpoint, non-reentrant). Installed as the
    layer's own `forward`; it holds the layer, so a deep copy of the model gets its own."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.layer = layer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = type(self.layer).forward.__get__(self.layer)
        return checkpoint(
            forward,
            *args,
            use_reentrant=False,  # the reentrant variant refuses torch.autograd.grad
            # the recomputation runs in the backward pass, outside the engine's forward: it
            # takes the same twice-differentiable kernels
            context_fn=lambda: (contextlib.nullcontext(), _Reentrant(second_order_kernels)),
            **kwargs,
        )


class _Reentrant:
    """A context manager made afresh from `make` each time it is entered (the recomputation
    context of a checkpoint may be entered more than once)."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.entered: list[Any] = []

    def __enter__(self) -> None:
        cm = self.make()
        cm.__enter__()
        self.entered.append(cm)

    def __exit__(self, *exc: Any) -> None:
        self.entered.pop().__exit__(*exc)


def checkpoint_layers(model: torch.nn.Module) -> int:
    """Activation checkpointing of every transformers layer (GradientCheckpointingLayer: a
    decoder or encoder block) of `model`, in eval mode as in train mode: each layer keeps only
    its inputs during the forward pass and recomputes the rest when the backward pass reaches
    it. transformers' own `gradient_checkpointing_enable` acts only in train mode, so the
    layer's forward is replaced here. Returns how many layers it now covers (0: none to
    checkpoint). The products are unchanged, bit for bit (tests/worker/test_checkpointing.py),
    but the Hessian-vector product keeps every recomputed activation for its second backward
    pass, so it saves a gradient's memory and not a product's: no job turns it on
    (docs/numerics.md, "Activation checkpointing in the product"; bench/checkpointing.py)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    no_cache(model)  # a key/value cache filled in the forward would be filled again
    count = 0
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            if not isinstance(layer.__dict__.get("forward"), _Checkpointed):
                layer.forward = _Checkpointed(layer)
            count += 1
    return count
