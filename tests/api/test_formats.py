"""The torch-free header readers on hand-made edge cases."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from service.blobs.formats import Refused, npy, safetensors
from service.blobs.formats.datasets import inspect_dataset
from service.blobs.formats.models import inspect_model


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_header_length_starting_with_0x80_is_not_a_pickle(tmp_path: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {}}
    raw = json.dumps(header).encode()
    raw += b" " * (0x180 - len(raw))  # header length 0x180: first byte 0x80
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    assert path.read_bytes()[0] == 0x80
    assert inspect_model(path, "w", 1 << 20)["format"] == "safetensors"


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "needs 16 bytes"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8000]}, "needs 8 bytes"),
        ({"dtype": "F32", "shape": [2000], "data_offsets": [0, 8000]}, "truncated"),
        ({"dtype": "OBJ", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "shape"),
    ],
)
def test_safetensors_entries_checked(tmp_path: Path, entry: dict, needle: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(_safetensors({"w": entry}, bytes(8)))
    with pytest.raises(Refused, match=needle):
        safetensors.read_header(path, "x")


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_versions(version: tuple[int, int]) -> None:
    data = _npy(np.zeros((3, 5), ">f8"), version)
    meta, total = npy.read_header(io.BytesIO(data), "a")
    assert meta == {"dtype": "float64", "shape": [3, 5]} and total == len(data)


@pytest.mark.parametrize(
    ("array", "status"),
    [
        (np.array([1, "a"], dtype=object), 415),
        (np.zeros(2, dtype=[("a", "<f4"), ("b", "O")]), 422),
        (np.array(["ab", "c"]), 422),
        (np.zeros(2, np.complex64), 422),
    ],
    ids=["object", "structured", "unicode", "complex"],
)
def test_npy_refuses_non_numeric(array: np.ndarray, status: int) -> None:
    with pytest.raises(Refused) as info:
        npy.read_header(io.BytesIO(_npy(array)), "a")
    assert info.value.status == status


def test_npy_header_is_never_evaluated() -> None:
    evil = b"{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (1,)}"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(evil)) + evil
    with pytest.raises(Refused, match="not a dict literal"):
        npy.read_header(io.BytesIO(data), "a")


def test_dataset_scalar_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.float32(1.0), targets=np.zeros(1))
    with pytest.raises(Refused, match="scalar"):
        inspect_dataset(path, "d", "inputs", "targets", 1 << 20)
    np.savez(path, inputs=np.zeros((0, 2)), targets=np.zeros(0))
    with pytest.raises(Refused, match="no examples"):
        inspect_dataset(path, "d", "inputs", "targets", 1 << 20)


def test_zip_expansion_capped(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, inputs=np.zeros((4096, 256), np.float32), targets=np.zeros(4096))
    assert path.stat().st_size < 100_000
    with pytest.raises(Refused, match="expand"):
        inspect_dataset(path, "bomb", "inputs", "targets", 1_000_000)
