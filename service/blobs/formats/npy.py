"""Parse a .npy header by the format's specification, never through numpy's loader.

A .npy file is the magic b"\\x93NUMPY", a version, a header length and a Python dict
literal ({'descr': '<f4', 'fortran_order': False, 'shape': (10, 3)}), then the raw data.
The dict is read with ast.literal_eval (literals only, no code), and object dtypes, which
numpy stores as a pickle, are refused.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from typing import IO, Any

from service.blobs.formats import Refused

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 65_536
_NUMERIC = re.compile(r"^[<>|=]?([biuf])(\d+)$")
_NAMES = {"b": "bool", "i": "int", "u": "uint", "f": "float"}


def read_header(fh: IO[bytes], label: str) -> tuple[dict[str, Any], int]:
    """Returns ({"dtype", "shape"}, data bytes the header promises) for one .npy stream."""
    magic = fh.read(8)
    if len(magic) < 8 or magic[:6] != MAGIC:
        raise Refused(422, "not-npy", f"{label}: not a .npy array (bad magic bytes)")
    major = magic[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", fh.read(2))
        prefix = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", fh.read(4))
        prefix = 12
    else:
        raise Refused(422, "not-npy", f"{label}: unsupported .npy version {major}")
    if hlen > MAX_HEADER_BYTES:
        raise Refused(422, "not-npy", f"{label}: .npy header of {hlen} bytes is too long")
    raw = fh.read(hlen)
    if len(raw) < hlen:
        raise Refused(422, "truncated", f"{label}: .npy header is truncated")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as e:
        raise Refused(422, "not-npy", f"{label}: .npy header is not a dict literal") from e
    if not isinstance(header, dict) or not {"descr", "shape", "fortran_order"} <= set(header):
        raise Refused(422, "not-npy", f"{label}: .npy header lacks descr/shape/fortran_order")
    dtype, itemsize = _dtype(header["descr"], label)
    shape = header["shape"]
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise Refused(422, "not-npy", f"{label}: .npy shape {shape!r} is not a tuple of ints")
    if header["fortran_order"] not in (True, False):
        raise Refused(422, "not-npy", f"{label}: .npy fortran_order must be True or False")
    data_bytes = math.prod(shape) * itemsize
    return {"dtype": dtype, "shape": list(shape)}, prefix + hlen + data_bytes


def _dtype(descr: Any, label: str) -> tuple[str, int]:
    if isinstance(descr, str) and descr.lstrip("<>|=").startswith("O"):
        raise Refused(
            415,
            "pickled-array",
            f"{label}: dtype object ('O') arrays are stored as pickles and are never loaded; "
            "save numeric arrays (float32 inputs, int64 class targets)",
        )
    m = _NUMERIC.match(descr) if isinstance(descr, str) else None
    if m is None:
        raise Refused(
            422,
            "unsupported-dtype",
            f"{label}: dtype {descr!r} is not a plain numeric type (bool, int, uint, float)",
        )
    kind, size = m.group(1), int(m.group(2))
    if kind == "b":
        return "bool", size
    return f"{_NAMES[kind]}{size * 8}", size
