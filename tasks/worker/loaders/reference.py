"""Models registered by reference: the files a URI names, found and checked again when a job
loads them (the file system may have changed since registration), then read by the format's
own loader.

A file: reference is located under the data root with tasks.artifacts.model_refs' rules; an
http(s) one is fetched into a private folder under `data_dir/cache` (streamed, capped, every
address checked: tasks.artifacts.uris) and removed once the model is in memory. A sharded
checkpoint's index is checked against its shards' own headers, read by the safetensors
library (which refuses overlapping or truncated tensors), before any tensor is loaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from tasks.artifacts import model_refs, uris
from tasks.artifacts.hf_checkpoint import BadCheckpoint
from tasks.settings import Settings
from tasks.worker.errors import LoadError


def _checked(uri: str, meta: dict[str, Any], settings: Settings, tmp: Path) -> Path:
    """The local path (file, index or folder) of the reference, every rule checked again."""
    if uris.scheme_of(uri, settings) == "file":
        ckpt = model_refs.locate(uri, settings)
    else:
        ckpt = model_refs.fetch(uri, settings, tmp)
    recorded = meta.get("layout")
    if recorded and ckpt.layout != recorded:
        raise LoadError(
            "Model URI changed",
            f"model {uri}: it was registered as a {recorded} checkpoint and is now a "
            f"{ckpt.layout} one; register it again",
        )
    if ckpt.index is not None:
        model_refs.check_index(ckpt, {s.name: _tensor_names(s) for s in ckpt.weights}, uri)
    return ckpt.path


def _tensor_names(shard: Path) -> set[str]:
    try:
        with safe_open(str(shard), framework="pt") as f:
            return set(f.keys())
    except (SafetensorError, OSError) as e:
        raise LoadError("Unreadable weights", f"{shard.name}: not a safetensors file ({e})") from e


@contextmanager
def referenced(meta: dict[str, Any], settings: Settings | None) -> Iterator[Path]:
    """The path a loader reads for a model registered by reference, while the context lasts."""
    uri = str(meta.get("uri") or "")
    if settings is None:
        raise LoadError("Model URI refused", f"model {uri}: no settings to check the URI with")
    cache = Path(settings.data_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="model-") as tmp:
        try:
            path = _checked(uri, meta, settings, Path(tmp))
        except uris.UriRejected as e:
            raise LoadError("Model URI refused", f"model: {e.detail}") from e
        except BadCheckpoint as e:
            raise LoadError("Unusable model checkpoint", f"model: {e.detail}") from e
        yield path
