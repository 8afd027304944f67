"""Check a dataset file (.npz or .safetensors) and record its arrays' names, shapes, dtypes.

The same check serves uploads and file: URIs at submission, so a job never reaches a worker
with data that lacks the arrays it names or whose inputs and targets disagree in length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.blobs.formats import Refused, archive, npy, read_head, safetensors
from tasks.artifacts import formats
from tasks.contract import datanames
from tasks.contract.datanames import InputsKey

HOW_TO_SAVE = (
    "save numeric arrays with numpy.savez('data.npz', inputs=X, targets=y) or "
    "safetensors.numpy.save_file({'inputs': X, 'targets': y}, 'data.safetensors')"
)


def inspect_dataset(
    path: Path,
    label: str,
    inputs_key: InputsKey | None,
    targets_key: str | None,
    max_uncompressed: int,
    stored: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """{"format", "arrays": {name: {"dtype", "shape"}}, "num_examples", "inputs_key",
    "targets_key"} with the names resolved (tasks.contract.datanames), or Refused."""
    size, head = read_head(path, label)
    if archive.is_zip(head):
        fmt, arrays = formats.NPZ, _npz_arrays(path, label, max_uncompressed)
    elif safetensors.looks_like(head, size):  # before the pickle test: a length may be 0x80..
        fmt, arrays = formats.SAFETENSORS, safetensors.read_header(path, label)
    elif head[:1] == b"\x80" or head[:6] == npy.MAGIC:
        what = "a raw Python pickle" if head[:1] == b"\x80" else "a single .npy array"
        raise Refused(415, "unknown-format", f"{label}: {what} is not a dataset; {HOW_TO_SAVE}")
    else:
        raise Refused(
            415, "unknown-format", f"{label}: neither .npz nor .safetensors; {HOW_TO_SAVE}"
        )
    inputs_key, targets_key = resolve_names(arrays, label, inputs_key, targets_key, stored)
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


def resolve_names(
    arrays: dict[str, dict[str, Any]],
    label: str,
    inputs_key: InputsKey | None,
    targets_key: str | None,
    stored: dict[str, Any] | None = None,
) -> tuple[InputsKey, str]:
    """The names a job will use (given, stored at upload, or recognised), or a 422."""
    try:
        return datanames.resolve(arrays, inputs_key, targets_key, stored)
    except datanames.NamesError as e:
        raise Refused(422, "missing-array", f"{label}: {e.detail}", field=e.part) from e


def check_arrays(
    arrays: dict[str, dict[str, Any]], label: str, inputs_key: InputsKey, targets_key: str
) -> int:
    """The number of examples; refuses scalars and arrays whose first dimensions differ."""
    names = [*datanames.input_names(inputs_key), targets_key]
    for key in names:
        if key not in arrays:
            raise Refused(422, "missing-array", f"{label}: no array {key!r}")
        if not arrays[key]["shape"]:
            raise Refused(
                422,
                "bad-shape",
                f"{label}: array {key!r} is a scalar; its first dimension must be the examples",
            )
    counts = {key: arrays[key]["shape"][0] for key in names}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k!r} {n}" for k, n in counts.items())
        raise Refused(
            422,
            "length-mismatch",
            f"{label}: the arrays must share their first dimension (the examples): {listed}",
        )
    n = counts[targets_key]
    if n == 0:
        raise Refused(422, "bad-shape", f"{label}: the dataset holds no examples")
    return n
