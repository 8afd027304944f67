"""Models registered by reference: a URI the workers read instead of uploaded bytes.

Three forms, told from the URI alone (so the gateway and the worker agree without reading):

    file      one model file as it would be uploaded (.pt2, a TorchScript .pt/.pth,
              .safetensors, a zipped save_pretrained folder .zip)
    sharded   `*.safetensors.index.json`: a sharded safetensors checkpoint, its shards beside
              the index, loaded as one state dict
    folder    a save_pretrained folder: config.json and model.safetensors or its shards with
              model.safetensors.index.json (a file: URI naming a directory, or an http(s) URI
              ending in `/`)

Which URIs may be named at all is tasks.artifacts.uris' one set of rules (scheme allow-list,
data-root containment, no `..`, symlinks resolved, outbound address checks, size cap); this
module adds what a checkpoint's own files must satisfy: every file it reads (config.json, the
index, the shards) is a plain name inside the checkpoint's folder, still inside it once its
symlinks are resolved; the index maps its tensors to shards that exist; pickled weights are
never read. The gateway calls `check_reference` and `locate` at registration, the worker
`locate` again (the file system may have changed) or `fetch` for http(s), then checks the
fetched folder with the same `folder_checkpoint`. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote, unquote, urljoin, urlsplit

from tasks.artifacts import formats, uris
from tasks.artifacts.hf_checkpoint import (
    CONFIG,
    INDEX,
    PICKLE_SUFFIXES,
    SAVE_HINT,
    WEIGHTS,
    BadCheckpoint,
)
from tasks.settings import Settings

Layout = Literal["file", "sharded", "folder"]
FILE: Final = "file"
SHARDED: Final = "sharded"
FOLDER: Final = "folder"
LAYOUTS: Final = (FILE, SHARDED, FOLDER)

#: what a model record registered by reference holds in `source`
SOURCE: Final = "uri"
INDEX_SUFFIX: Final = ".safetensors.index.json"
#: single model files (their content decides the format, as for uploads)
FILE_SUFFIXES: Final = tuple(
    sorted({s for f in formats.MODEL_FORMATS for s in f.suffixes} | {".zip"})
)
FIELD: Final = "uri"
MAX_INDEX_BYTES: Final = 64 * 1024 * 1024


@dataclass
class Checkpoint:
    """The local files of a reference: `path` is the file, the index or the folder."""

    layout: Layout
    path: Path
    weights: list[Path] = field(default_factory=list)  # safetensors files, in shard order
    index: Path | None = None
    config: Path | None = None
    weight_map: dict[str, str] = field(default_factory=dict)  # tensor → shard name

    @property
    def size(self) -> int:
        files = [*self.weights, self.index, self.config]
        return sum(f.stat().st_size for f in files if f is not None)


def _bad(status: int, slug: str, detail: str) -> BadCheckpoint:
    return BadCheckpoint(status, slug, detail, FIELD)


def layout_of(uri: str) -> Layout:
    """The form a URI names, from its path: a folder ends in `/`, an index in
    `.safetensors.index.json`; anything else must be one model file. UriRejected otherwise."""
    path = unquote(urlsplit(uri).path)
    low = path.lower()
    if low.endswith("/"):
        return FOLDER
    if low.endswith(INDEX_SUFFIX):
        return SHARDED
    if low.endswith(FILE_SUFFIXES):
        return FILE
    raise uris.UriRejected(
        f"{path!r} names no model: give a model file ({', '.join(FILE_SUFFIXES)}), a sharded "
        f"checkpoint's {INDEX}, or a save_pretrained folder (a path ending in '/')"
    )


def check_reference(uri: str, settings: Settings) -> Layout:
    """The URI rules (tasks.artifacts.uris) for a model reference, and its form. A file: URI
    is located and its files checked (`locate`); an http(s) one is checked without connecting.
    Raises UriRejected or BadCheckpoint."""
    if uris.scheme_of(uri, settings) == "file":
        return locate(uri, settings).layout
    uris.check_http(uri, settings)
    return layout_of(uri)


def locate(uri: str, settings: Settings) -> Checkpoint:
    """The checked local files of a file: URI (a folder needs no trailing '/' here)."""
    path = uris.local_path(uri, settings)
    shown = unquote(urlsplit(uri).path)
    if path.is_dir():
        ckpt = folder_checkpoint(path, shown)
    elif not path.is_file():
        raise uris.UriRejected(f"{shown} is neither a regular file nor a folder")
    elif path.name.lower().endswith(INDEX_SUFFIX):
        ckpt = sharded_checkpoint(path, shown)
    else:
        layout_of(path.name)  # a model file's name, or refused
        ckpt = Checkpoint(FILE, path, weights=[path])
    _cap(ckpt, settings, shown)
    return ckpt


def _cap(ckpt: Checkpoint, settings: Settings, shown: str) -> None:
    size = ckpt.size
    if size > settings.max_uri_bytes:
        raise uris.UriRejected(
            f"{shown}: the checkpoint's files hold {size} bytes, above the "
            f"{settings.max_uri_bytes}-byte limit (SHARPNESS_MAX_URI_BYTES)"
        )


def member(folder: Path, name: str, label: str, what: str) -> Path:
    """`folder/name` for a plain file name, resolved and still inside `folder` (a symlink may
    point elsewhere in the folder, never out of it); BadCheckpoint otherwise."""
    _plain(name, label, what)
    root = folder.resolve()
    try:
        resolved = (folder / name).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise _bad(422, "missing-shard", f"{label}: {what} {name!r} is not in the folder") from None
    except (OSError, RuntimeError) as e:
        raise _bad(422, "corrupt", f"{label}: cannot resolve {name!r}: {type(e).__name__}") from e
    if not resolved.is_relative_to(root):
        raise uris.UriRejected(
            f"{label}: {what} {name!r} resolves outside the checkpoint's folder; symlinks are "
            "followed before the check"
        )
    if not resolved.is_file():
        raise _bad(422, "corrupt", f"{label}: {what} {name!r} is not a regular file")
    return resolved


def read_index(index: Path, label: str) -> dict[str, str]:
    """The index's weight_map (tensor → shard file name), each shard a plain name."""
    if index.stat().st_size > MAX_INDEX_BYTES:
        raise _bad(422, "corrupt", f"{label}: {INDEX} is over {MAX_INDEX_BYTES} bytes")
    try:
        weight_map = json.loads(index.read_bytes())["weight_map"]
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise _bad(
            422, "corrupt", f"{label}: {index.name} is not an index with a 'weight_map' ({e})"
        ) from e
    if not isinstance(weight_map, dict) or not weight_map:
        raise _bad(422, "corrupt", f"{label}: {index.name}'s weight_map names no tensors")
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise _bad(422, "corrupt", f"{label}: {index.name} must map tensors to shard names")
    return {str(k): v for k, v in weight_map.items()}


def sharded_checkpoint(index: Path, label: str) -> Checkpoint:
    """An index and the shards it names, every one inside the index's folder."""
    folder = index.parent
    weight_map = read_index(index, label)
    shards = [member(folder, s, label, "shard") for s in sorted(set(weight_map.values()))]
    return Checkpoint(SHARDED, index, weights=shards, index=index, weight_map=weight_map)


def folder_checkpoint(folder: Path, label: str) -> Checkpoint:
    """A save_pretrained folder: config.json, then the index and its shards, else
    model.safetensors. Pickled weights alone are refused; other files are never read."""
    if not (folder / CONFIG).exists():
        raise _bad(422, "missing-config", f"{label}: no {CONFIG} in the folder; {SAVE_HINT}")
    config = member(folder, CONFIG, label, "config")
    if (folder / INDEX).exists():
        ckpt = sharded_checkpoint(member(folder, INDEX, label, "index"), label)
        return Checkpoint(
            FOLDER, folder.resolve(), ckpt.weights, ckpt.index, config, ckpt.weight_map
        )
    if (folder / WEIGHTS).exists():
        return Checkpoint(
            FOLDER, folder.resolve(), [member(folder, WEIGHTS, label, "weights")], None, config
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        raise _bad(
            415,
            "pickle",
            f"{label}: the folder's weights are pickled ({pickles[0]}); the service reads "
            f"weights from safetensors only. {SAVE_HINT}",
        )
    raise _bad(
        422, "missing-weights", f"{label}: no {WEIGHTS} (or {INDEX} with its shards); {SAVE_HINT}"
    )


def check_index(ckpt: Checkpoint, tensors: dict[str, set[str]], label: str) -> None:
    """The index agrees with its shards: `tensors` is each shard's tensor names (by file
    name). Every tensor the index maps is in the shard it names, and every tensor of a shard
    is mapped to that shard."""
    for name, shard in ckpt.weight_map.items():
        if name not in tensors.get(shard, set()):
            raise _bad(
                422,
                "corrupt",
                f"{label}: {INDEX} maps tensor {name!r} to {shard}, which does not hold it; "
                "save the checkpoint again with save_pretrained",
            )
    for shard, names in tensors.items():
        stray = sorted(n for n in names if ckpt.weight_map.get(n) != shard)
        if stray:
            raise _bad(
                422,
                "corrupt",
                f"{label}: shard {shard} holds tensor {stray[0]!r}, which {INDEX} "
                f"{'maps to another shard' if stray[0] in ckpt.weight_map else 'does not map'}"
                "; save the checkpoint again with save_pretrained",
            )


def fetch(uri: str, settings: Settings, folder: Path, timeout_s: float = 60.0) -> Checkpoint:
    """Download what an http(s) reference needs into `folder` (the URI rules and the size cap,
    for all its files together, are tasks.artifacts.uris'), then check it as a local one."""
    layout = layout_of(uri)
    budget = [settings.max_uri_bytes]

    def get(url: str, name: str) -> Path:
        target = folder / name
        uris.download(url, settings, target, budget[0], timeout_s)
        budget[0] -= target.stat().st_size
        return target

    shown = uri
    if layout == FILE:
        name = Path(unquote(urlsplit(uri).path)).name
        path = get(uri, name)
        return Checkpoint(FILE, path, weights=[path])
    if layout == SHARDED:
        index_name = Path(unquote(urlsplit(uri).path)).name
        index = get(uri, index_name)
        for shard in sorted(set(read_index(index, shown).values())):
            _plain(shard, shown, "shard")
            get(urljoin(uri, quote(shard)), shard)
        return sharded_checkpoint(index, shown)
    get(urljoin(uri, CONFIG), CONFIG)
    try:
        index = get(urljoin(uri, INDEX), INDEX)
    except uris.UriMissing:
        get(urljoin(uri, WEIGHTS), WEIGHTS)
    else:
        for shard in sorted(set(read_index(index, shown).values())):
            _plain(shard, shown, "shard")
            get(urljoin(uri, quote(shard)), shard)
    return folder_checkpoint(folder, shown)


def _plain(name: str, label: str, what: str) -> None:
    """A name a checkpoint may give one of its files: a plain file name, no path."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise _bad(
            422,
            "corrupt",
            f"{label}: {what} {name!r} is not a plain file name in the checkpoint's folder "
            "(no '/', '..' or absolute paths)",
        )
