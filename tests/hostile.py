"""Hostile uploads, built from real archives (torch.export.save, torch.jit.save, safetensors,
numpy) and then rewritten. Each payload, were it ever unpickled or run, would create `marker`;
the tests assert that it never exists."""

from __future__ import annotations

import builtins
import io
import json
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import torch

SYMLINK = 0o120777 << 16  # a symbolic link's mode in a zip member's external_attr


class Payload:
    """Pickles as a call of builtins.open(marker, 'w'): a __reduce__ that would run on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


class SystemPayload:
    """Pickles as os.system('touch marker')."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def rezip(entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    """A zip of (name or ZipInfo, bytes) in order; duplicate names are kept."""
    buf = io.BytesIO()
    items = entries.items() if isinstance(entries, dict) else entries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, blob in items:
                zf.writestr(name, blob)
    return buf.getvalue()


def _one(m: dict[str, bytes], suffix: str) -> str:
    return next(k for k in m if k.endswith(suffix))


def pt2_reduce_in_sample_inputs(pt2: bytes, marker: Path) -> tuple[bytes, str]:
    """The sample inputs replaced by torch.save of an object whose __reduce__ opens a file."""
    m = members(pt2)
    key = _one(m, ".pt")
    assert "sample_inputs" in key
    buf = io.BytesIO()
    torch.save(((torch.zeros(2, 4), Payload(marker)), {}), buf)
    m[key] = buf.getvalue()
    return rezip(m), key


def pt2_extra_pickle(
    pt2: bytes, marker: Path, name: str = "extra/payload.pkl"
) -> tuple[bytes, str]:
    """An extra member holding a pickle beside the program."""
    m = members(pt2)
    root = next(iter(m)).split("/", 1)[0]
    key = f"{root}/{name}"
    m[key] = pickle.dumps(Payload(marker), protocol=2)
    return rezip(m), key


def torchscript_rewritten_data_pkl(ts: bytes, marker: Path, protocol: int) -> tuple[bytes, str]:
    """data.pkl replaced by a pickle that calls os.system (GLOBAL at protocol 2,
    STACK_GLOBAL with MEMOIZE at protocol 4)."""
    m = members(ts)
    key = _one(m, "/data.pkl")
    m[key] = pickle.dumps(SystemPayload(marker), protocol=protocol)
    return rezip(m), key


def torchscript_injected_code(ts: bytes, marker: Path) -> tuple[bytes, str]:
    """Python appended to one of the archive's code files."""
    m = members(ts)
    key = next(k for k in m if "/code/" in k and k.endswith(".py"))
    m[key] += f"\nimport os\nos.system('touch {marker}')\n".encode()
    return rezip(m), key


def torchscript_reflection_code(ts: bytes) -> tuple[bytes, str]:
    """A TorchScript-looking expression that reaches Python through reflection."""
    m = members(ts)
    key = next(k for k in m if "/code/" in k and k.endswith(".py"))
    m[key] += b"\nCLS = ().__class__.__bases__[0].__subclasses__()\n"
    return rezip(m), key


def safetensors_raw(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def safetensors_overlapping() -> bytes:
    """Two F32[4] tensors sharing their last 8 bytes: in range, each the right size."""
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    return safetensors_raw(header, bytes(24))


def with_member(data: bytes, name: str | zipfile.ZipInfo, blob: bytes = b"x") -> bytes:
    """A zip with one more member appended."""
    return rezip([*members(data).items(), (name, blob)])


def symlink_member(name: str) -> zipfile.ZipInfo:
    """A member that unzip would create as a symbolic link (its bytes are the target)."""
    info = zipfile.ZipInfo(name)
    info.external_attr = SYMLINK
    info.create_system = 3  # unix
    return info


def pt2_graph_calls(pt2: bytes, target: str, marker: Path) -> tuple[bytes, str]:
    """A program whose second node calls `target` (torch.serialization.os.system: the
    deserializer resolves targets by attribute lookup from `torch`) with a shell command."""
    m = members(pt2)
    key = next(k for k in m if "/models/" in k and k.endswith(".json"))
    program = json.loads(m[key])
    node = program["graph_module"]["graph"]["nodes"][1]
    node["target"] = target
    node["inputs"] = [{"name": "", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]
    m[key] = json.dumps(program).encode()
    return rezip(m), key
