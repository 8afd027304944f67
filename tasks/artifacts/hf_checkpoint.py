"""What a Hugging Face checkpoint upload must hold, checked without torch or transformers.

Shared by the gateway (at upload) and the worker (before transformers sees anything): the
files `save_pretrained` writes, `config.json` plus `model.safetensors` (or its shards with
`model.safetensors.index.json`), sent as a zip of the folder or as the weights file with the
config beside it. Nothing here executes code from the upload: the config is plain JSON, and a
config that would need custom code (`auto_map`, a model type transformers does not ship) is
refused by the worker before any class is chosen.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tasks.artifacts.checks import UnsafeArchive, check_members

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"

# head → how the architecture class names of transformers end for that head
HEADS: dict[str, tuple[str, ...]] = {
    "sequence_classification": ("ForSequenceClassification",),
    "token_classification": ("ForTokenClassification",),
    "causal_lm": ("ForCausalLM", "LMHeadModel"),
    "masked_lm": ("ForMaskedLM",),
    "image_classification": ("ForImageClassification",),
    # encoder-decoder language models (T5, BART, MBart, Pegasus, Marian, ...): the worker
    # accepts the class only where transformers lists it as a seq2seq LM for the model_type
    "seq2seq_lm": ("ForConditionalGeneration", "MTModel"),
}

# files that only load by unpickling, or that are code: never accepted in a checkpoint
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")

SAVE_HINT = (
    "save it with model.save_pretrained(folder) (safetensors is the default) and upload the "
    "folder's config.json and model.safetensors"
)


class BadCheckpoint(Exception):
    """The checkpoint is refused; `status` 415 for a form never accepted (pickles, code),
    422 for content that is broken or incomplete. `field` names what is at fault."""

    def __init__(self, status: int, slug: str, detail: str, field: str = "file") -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.field = field


@dataclass
class Layout:
    """Where the checkpoint's files sit in a zip: `root` is the folder holding config.json."""

    root: str
    weights: list[str]  # member names of the safetensors files, in shard order
    index: str | None  # member name of model.safetensors.index.json, when sharded

    def member(self, name: str) -> str:
        return f"{self.root}{name}"


def is_checkpoint_zip(names: list[str]) -> bool:
    """A zip with a config.json at its top or in its one top folder (torch.export and
    TorchScript archives have none): a save_pretrained folder, whatever its weights are."""
    return any(PurePosixPath(n).name == CONFIG and n.count("/") <= 1 for n in names)


def layout(zf: zipfile.ZipFile, label: str) -> Layout:
    """Find config.json and its weights; refuse pickled weights and code anywhere in the zip,
    and members that point outside it (tasks.artifacts.checks.check_members)."""
    try:
        check_members(zf, label)
    except UnsafeArchive as e:
        raise BadCheckpoint(e.status, e.slug, e.detail) from e
    names = [n for n in zf.namelist() if not n.endswith("/")]
    for n in names:
        low = n.lower()
        if low.endswith(PICKLE_SUFFIXES):
            raise BadCheckpoint(
                415,
                "pickle",
                f"{label}: member {n!r} is a pickled checkpoint; the service reads weights "
                f"from safetensors only. Remove it and {SAVE_HINT}",
            )
        if low.endswith(CODE_SUFFIXES):
            raise BadCheckpoint(
                415,
                "remote-code",
                f"{label}: member {n!r} is code; models are built by transformers from the "
                "config alone and code that comes with a checkpoint is never run. Remove it "
                "(only architectures that transformers ships are accepted)",
            )
    configs = sorted((n for n in names if PurePosixPath(n).name == CONFIG), key=len)
    if not configs:
        raise BadCheckpoint(
            422, "missing-config", f"{label}: no config.json in the zip; {SAVE_HINT}"
        )
    config = configs[0]
    root = config[: -len(CONFIG)]
    if any(c.count("/") == config.count("/") for c in configs[1:]):
        raise BadCheckpoint(
            422,
            "ambiguous-checkpoint",
            f"{label}: several config.json files at the same depth ({configs}); zip one "
            "save_pretrained folder",
        )
    here = {n[len(root) :] for n in names if n.startswith(root) and "/" not in n[len(root) :]}
    if INDEX in here:
        shards = _index_shards(zf, root + INDEX, label)
        missing = [s for s in shards if s not in here]
        if missing:
            raise BadCheckpoint(
                422,
                "missing-shard",
                f"{label}: {INDEX} names shard {missing[0]!r}, which is not in the zip",
            )
        return Layout(root, [root + s for s in shards], root + INDEX)
    if WEIGHTS in here:
        return Layout(root, [root + WEIGHTS], None)
    found = sorted(n for n in here if n.endswith(".safetensors"))
    raise BadCheckpoint(
        422,
        "missing-weights",
        f"{label}: no {WEIGHTS} (or {INDEX} with its shards) beside config.json"
        + (f"; found {found}" if found else "")
        + f". {SAVE_HINT}",
    )


#: what zip tools add beside a folder's files: never part of a checkpoint's content
_JUNK = ("__MACOSX/",)
_JUNK_NAMES = (".DS_Store", "Thumbs.db")
#: one timestamp for every member of a canonical zip (the earliest a zip can hold)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_zip(src: str | Path, dst: str | Path, label: str = "file") -> None:
    """Write the checkpoint zip `src` again as `dst` with its content alone deciding the bytes:
    member paths relative to the folder holding config.json (a top folder or none), sorted,
    one timestamp and mode, one compression, no directory entries or zip-tool litter. The
    same save_pretrained folder zipped by any tool, with or without its top folder, gives the
    same bytes, so the same id."""
    with zipfile.ZipFile(src) as zf:
        where = layout(zf, label)
        root = where.root
        members: dict[str, str] = {}
        for n in zf.namelist():
            if n.endswith("/") or n.startswith(_JUNK) or PurePosixPath(n).name in _JUNK_NAMES:
                continue
            name = n[len(root) :] if n.startswith(root) else n
            members.setdefault(name, n)
        with zipfile.ZipFile(dst, "w") as out:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3
                with zf.open(members[name]) as fh, out.open(info, "w") as dest:
                    while chunk := fh.read(1 << 20):
                        dest.write(chunk)


def _index_shards(zf: zipfile.ZipFile, member: str, label: str) -> list[str]:
    try:
        index = json.loads(zf.read(member))
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise BadCheckpoint(
            422, "corrupt", f"{label}: {INDEX} is not an index with a 'weight_map' ({e})"
        ) from e
    if not shards or not all(isinstance(s, str) and "/" not in s for s in shards):
        raise BadCheckpoint(422, "corrupt", f"{label}: {INDEX} must map weights to shard names")
    return shards


def parse_config(raw: bytes | str, label: str, field: str = "file") -> dict[str, Any]:
    """config.json as a dict with a `model_type`; refuse configs that ask for custom code."""
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadCheckpoint(422, "corrupt", f"{label}: config.json is not JSON: {e}", field) from e
    if not isinstance(config, dict):
        raise BadCheckpoint(422, "corrupt", f"{label}: config.json is not a JSON object", field)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.strip():
        raise BadCheckpoint(
            422,
            "missing-model-type",
            f"{label}: config.json has no 'model_type'; it is the key transformers builds the "
            f"model from. {SAVE_HINT}",
            field,
        )
    if "auto_map" in config:
        raise BadCheckpoint(
            415,
            "remote-code",
            f"{label}: config.json has an 'auto_map', so the model needs code that comes with "
            "the checkpoint (trust_remote_code); such code is never run. Only architectures "
            "that transformers ships are accepted: export the model with torch.export instead",
            field,
        )
    archs = config.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) for a in archs)
    ):
        raise BadCheckpoint(
            422, "corrupt", f"{label}: config.json 'architectures' must be a list of names", field
        )
    return config


def head_of(config: dict[str, Any], declared: str | None, label: str) -> str:
    """The head to build: the declared one, else the one the config's architectures name."""
    if declared is not None:
        if declared not in HEADS:
            raise BadCheckpoint(
                422,
                "bad-head",
                f"{declared!r} is not one of {', '.join(HEADS)}",
                "head",
            )
        return declared
    for arch in config.get("architectures") or []:
        for head, suffixes in HEADS.items():
            if arch.endswith(suffixes):
                return head
    archs = config.get("architectures")
    raise BadCheckpoint(
        422,
        "missing-head",
        f"{label}: config.json's architectures ({archs or 'none'}) name no head the "
        f"service measures; declare one with the 'head' field ({', '.join(HEADS)})",
        "head",
    )
