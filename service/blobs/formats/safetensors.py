"""Read and check a safetensors header without loading any tensor.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the tensor bytes. Every
entry's `data_offsets` must lie inside the data and match its dtype and shape, and the entries
must tile the data (in range, non-overlapping, contiguous, covering it all, as the safetensors
library checks when a worker loads it), so a truncated or tampered file is refused here rather
than failing later in a worker.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import IO, Any

from service.blobs.formats import Refused

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit

# safetensors dtype → (bytes per element, the numpy-style name recorded in metadata)
DTYPES: dict[str, tuple[float, str]] = {
    "BOOL": (1, "bool"),
    "U8": (1, "uint8"),
    "I8": (1, "int8"),
    "U16": (2, "uint16"),
    "I16": (2, "int16"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "U32": (4, "uint32"),
    "I32": (4, "int32"),
    "F32": (4, "float32"),
    "U64": (8, "uint64"),
    "I64": (8, "int64"),
    "F64": (8, "float64"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
}


def looks_like(head: bytes, size: int) -> bool:
    """Cheap test on the first bytes: a plausible header length followed by '{'."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"


def read_header(path: Path, label: str) -> dict[str, dict[str, Any]]:
    """The tensors of a safetensors file: {name: {"dtype", "shape"}} with numpy-style dtypes.

    `label` names the file in messages.
    """
    with path.open("rb") as fh:
        return read_header_from(fh, path.stat().st_size, label)


def read_header_from(fh: IO[bytes], size: int, label: str) -> dict[str, dict[str, Any]]:
    """`read_header` for an open file of `size` bytes read from its start (a zip member)."""
    raw_n = fh.read(8)
    if len(raw_n) < 8:
        raise Refused(422, "truncated", f"{label}: too short to be safetensors")
    (n,) = struct.unpack("<Q", raw_n)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise Refused(
            422,
            "truncated",
            f"{label}: safetensors header says {n} header bytes but the file has "
            f"{size - 8} after the length; the file is truncated or not safetensors",
        )
    try:
        header = json.loads(fh.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise Refused(422, "corrupt", f"{label}: safetensors header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise Refused(422, "corrupt", f"{label}: safetensors header is not a JSON object")
    data_len = size - 8 - n
    tensors: dict[str, dict[str, Any]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _entry(label, name, entry, data_len)
        spans.append((entry["data_offsets"][0], entry["data_offsets"][1], name))
    _check_layout(label, spans, data_len)
    return tensors


def _check_layout(label: str, spans: list[tuple[int, int, str]], data_len: int) -> None:
    """The tensors tile the data: sorted by offset, each starts where the one before ends,
    from byte 0 to the end of the file, as the safetensors library requires when it loads.
    Overlapping tensors would alias one another's bytes; a gap or a tail hides data."""
    end, prev = 0, None
    for begin, stop, name in sorted(spans):
        if begin < end:
            raise Refused(
                422,
                "corrupt",
                f"{label}: tensor {name!r} (data bytes {begin}..{stop}) overlaps tensor "
                f"{prev!r}, which ends at {end}; save with safetensors "
                "(safetensors.torch.save_file), which writes each tensor once",
                "file",
            )
        if begin > end:
            raise Refused(
                422,
                "corrupt",
                f"{label}: data bytes {end}..{begin} before tensor {name!r} belong to no "
                "tensor; save with safetensors (safetensors.torch.save_file)",
                "file",
            )
        end, prev = stop, name
    if end < data_len:
        raise Refused(
            422,
            "corrupt",
            f"{label}: the tensors cover {end} data bytes but the file holds {data_len}; "
            "save with safetensors (safetensors.torch.save_file)",
            "file",
        )


def _entry(label: str, name: str, entry: Any, data_len: int) -> dict[str, Any]:
    where = f"{label}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise Refused(422, "corrupt", f"{where}: header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise Refused(422, "corrupt", f"{where}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise Refused(422, "corrupt", f"{where}: shape must be a list of non-negative ints")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise Refused(422, "corrupt", f"{where}: data_offsets must be [begin, end]")
    itemsize, np_name = DTYPES[dtype]
    expected = int(math.prod(shape) * itemsize)
    if offsets[1] - offsets[0] != expected:
        raise Refused(
            422,
            "corrupt",
            f"{where}: {dtype}{shape} needs {expected} bytes, data_offsets span "
            f"{offsets[1] - offsets[0]}",
        )
    if offsets[1] > data_len:
        raise Refused(
            422,
            "truncated",
            f"{where} ends at data byte {offsets[1]} but the file holds {data_len}; "
            "the upload is truncated",
        )
    return {"dtype": np_name, "shape": shape}
