"""Check a dataset file (.npz or .safetensors) and record its arrays' names, shapes, dtypes.

The same check serves uploads and file: URIs at submission, so a job never reaches a worker
with data that lacks the arrays it names or whose inputs and targets disagree in length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.formats import Refused, archive, npy, safetensors

HOW_TO_SAVE = (
    "save numeric arrays with numpy.savez('data.npz', inputs=X, targets=y) or "
    "safetensors.numpy.save_file({'inputs': X, 'targets': y}, 'data.safetensors')"
)


def inspect_dataset(
    path: Path, label: str, inputs_key: str, targets_key: str, max_uncompressed: int
) -> dict[str, Any]:
    """{"format", "arrays": {name: {"dtype", "shape"}}, "num_examples", ...} or Refused."""
    size = path.stat().st_size
    if size == 0:
        raise Refused(422, "empty", f"{label}: the file is empty")
    with path.open("rb") as fh:
        head = fh.read(16)
    if archive.is_zip(head):
        fmt, arrays = "npz", _npz_arrays(path, label, max_uncompressed)
    elif safetensors.looks_like(head, size):  # before the pickle test: a length may be 0x80..
        fmt, arrays = "safetensors", safetensors.read_header(path, label)
    elif head[:1] == b"\x80" or head[:6] == npy.MAGIC:
        what = "a raw Python pickle" if head[:1] == b"\x80" else "a single .npy array"
        raise Refused(415, "unknown-format", f"{label}: {what} is not a dataset; {HOW_TO_SAVE}")
    else:
        raise Refused(
            415, "unknown-format", f"{label}: neither .npz nor .safetensors; {HOW_TO_SAVE}"
        )
    n = check_arrays(arrays, label, inputs_key, targets_key)
    return {
        "format": fmt,
        "arrays": arrays,
        "num_examples": n,
        "inputs_key": inputs_key,
        "targets_key": targets_key,
    }


def _npz_arrays(path: Path, label: str, max_uncompressed: int) -> dict[str, dict[str, Any]]:
    arrays: dict[str, dict[str, Any]] = {}
    with archive.open_checked(path, label, max_uncompressed) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise Refused(
                    422,
                    "not-npz",
                    f"{label}: member {info.filename!r} is not a .npy array; {HOW_TO_SAVE}",
                )
            name = info.filename[: -len(".npy")]
            where = f"{label}: array {name!r}"
            with zf.open(info) as fh:
                meta, expected = npy.read_header(fh, where)
            if info.file_size != expected:
                raise Refused(
                    422,
                    "truncated",
                    f"{where}: header promises {expected} bytes, member holds {info.file_size}",
                )
            arrays[name] = meta
    return arrays


def check_arrays(
    arrays: dict[str, dict[str, Any]], label: str, inputs_key: str, targets_key: str
) -> int:
    """The number of examples; refuses missing arrays and mismatched first dimensions."""
    known = ", ".join(sorted(arrays)) or "none"
    for role, key in (("inputs", inputs_key), ("targets", targets_key)):
        if key not in arrays:
            raise Refused(
                422,
                "missing-array",
                f"{label}: no array {key!r} for the {role} (arrays: {known}); name it "
                f"{key!r} or pass {role}_key",
            )
        if not arrays[key]["shape"]:
            raise Refused(
                422,
                "bad-shape",
                f"{label}: array {key!r} is a scalar; its first dimension must be the examples",
            )
    n_in, n_t = arrays[inputs_key]["shape"][0], arrays[targets_key]["shape"][0]
    if n_in != n_t:
        raise Refused(
            422,
            "length-mismatch",
            f"{label}: array {inputs_key!r} has {n_in} examples but {targets_key!r} has {n_t}",
        )
    if n_in == 0:
        raise Refused(422, "bad-shape", f"{label}: array {inputs_key!r} holds no examples")
    return n_in
