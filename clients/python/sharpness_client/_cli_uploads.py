"""`sharpness models ...` and `sharpness datasets ...`: list, show, upload and delete uploads.

sharpness models list                 sharpness datasets list
sharpness models show ID              sharpness datasets show ID
sharpness models upload model.pt2     sharpness datasets upload data.npz --targets-key label
sharpness models register file:///data/llama/
sharpness models delete ID [--force]  sharpness datasets delete ID [--force]

A delete of an upload that a queued or running job or trajectory uses is refused by the
service (409, `in-use`, naming them) unless `--force`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import sharpness_client._render as _render
from sharpness_client.client import Client

HEADS = (
    "sequence_classification, token_classification, causal_lm, masked_lm, "
    "image_classification, seq2seq_lm"
)


def inputs_key(text: str) -> Any:
    """--inputs-key: one array name, or JSON (a list, or an object keyword → array)."""
    text = text.strip()
    if text[:1] not in "[{":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--inputs-key is not valid JSON ({e.msg})") from None


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    for noun, plural in (("model", "models"), ("dataset", "datasets")):
        p = sub.add_parser(plural, help=f"list, show, upload or delete {plural}")
        actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))
        ls = actions.add_parser("list", parents=[common], help="newest first")
        ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        actions.add_parser("show", parents=[common], help=f"print a {noun}").add_argument("id")
        up = actions.add_parser(
            "upload", parents=[common], help=f"upload a {noun} file and print its id"
        )
        if noun == "model":
            up.add_argument(
                "file",
                help="a .pt2 (torch.export), TorchScript or safetensors file, or a Hugging "
                "Face save_pretrained folder",
            )
            up.add_argument("--architecture", help="safetensors only: built-in architecture")
            up.add_argument("--config", help="safetensors only: JSON object of its arguments")
            up.add_argument("--head", help=f"Hugging Face folder only: {HEADS}")
            reg = actions.add_parser(
                "register",
                parents=[common],
                help="register a model by reference (a URI the workers read) and print its id",
            )
            reg.add_argument(
                "uri",
                help="file:///path under the service's data root (or http(s) where allowed): "
                "a model file, a sharded model.safetensors.index.json, or a save_pretrained "
                "folder",
            )
            reg.add_argument("--architecture", help="safetensors only: built-in architecture")
            reg.add_argument("--config", help="safetensors only: JSON object of its arguments")
            reg.add_argument("--head", help=f"Hugging Face checkpoints only: {HEADS}")
        else:
            up.add_argument("file", help="an .npz or .safetensors of the inputs and targets")
            up.add_argument(
                "--inputs-key",
                type=inputs_key,
                help="the model's inputs: an array name, or JSON for several (a list, or an "
                "object keyword → array); stored with the dataset (default: recognised)",
            )
            up.add_argument("--targets-key", help="the targets array (default: recognised)")
        rm = actions.add_parser(
            "delete",
            parents=[common],
            help=f"delete a {noun} (refused while a queued or running job uses it)",
        )
        rm.add_argument("id")
        rm.add_argument(
            "--force",
            action="store_true",
            help="delete even while queued or running jobs use it (they will fail)",
        )


def run(client: Client, args: argparse.Namespace, out: Callable[..., None]) -> int:
    noun = "model" if args.command == "models" else "dataset"
    resource = client.models if noun == "model" else client.datasets
    if args.action == "list":
        items: list[Any] = []
        for item in resource.list(limit=min(max(args.limit, 1), 1000)):
            if len(items) >= args.limit:
                break
            items.append(item)
        render = _render.models if noun == "model" else _render.datasets
        out(args, items, render(items))
        return 0
    if args.action == "show":
        info = resource.get(args.id)
        out(args, info, _render.upload(noun, info))
        return 0
    if args.action == "upload":
        if noun == "model":
            config = json.loads(args.config) if args.config else None
            info = client.models.upload(
                args.file, architecture=args.architecture, config=config, head=args.head
            )
        else:
            info = client.datasets.upload(
                args.file, inputs_key=args.inputs_key, targets_key=args.targets_key
            )
        out(args, info, _render.upload(noun, info))
        return 0
    if args.action == "register":
        config = json.loads(args.config) if args.config else None
        info = client.models.register(
            args.uri, architecture=args.architecture, config=config, head=args.head
        )
        out(args, info, _render.upload(noun, info))
        return 0
    resource.delete(args.id, force=args.force)
    out(args, {"id": args.id, "deleted": True}, f"deleted {noun} {args.id}")
    return 0
