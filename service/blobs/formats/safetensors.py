"""Read and check a safetensors header without loading any tensor.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the tensor bytes. Every
entry's `data_offsets` must lie inside the data and match its dtype and shape, so a truncated
or tampered file is refused here rather than failing later in a worker.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, BinaryIO

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


def read_header_from(fh: BinaryIO, size: int, label: str) -> dict[str, dict[str, Any]]:
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
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refused(422, "corrupt", f"{label}: safetensors header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise Refused(422, "corrupt", f"{label}: safetensors header is not a JSON object")
    data_len = size - 8 - n
    tensors: dict[str, dict[str, Any]] = {}
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _entry(label, name, entry, data_len)
        end_max = max(end_max, entry["data_offsets"][1])
    if end_max > data_len:
        raise Refused(
            422,
            "truncated",
            f"{label}: tensors need {end_max} data bytes but the file holds {data_len}; "
            "the upload is truncated",
        )
    return tensors


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
