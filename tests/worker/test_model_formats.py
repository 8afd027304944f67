"""The model-format registry (tasks.artifacts.formats) is the one list: every format has its
gateway inspection, its worker loader and its place in the API schemas, and the gateway and
the worker run the same upload check."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from service.blobs.formats import models as gateway
from service.blobs.schemas import ModelInfo
from sharpness_client.types import ModelInfo as ClientModelInfo
from tasks.artifacts import checks, formats
from tasks.worker.loaders.registry import LOADERS

ROOT = Path(__file__).resolve().parents[2]


def test_every_format_has_a_loader_and_a_schema_entry() -> None:
    assert set(LOADERS) == set(formats.NAMES)
    assert set(typing.get_args(formats.ModelFormatName)) == set(formats.NAMES)
    assert set(typing.get_args(ModelInfo.model_fields["format"].annotation)) == set(formats.NAMES)
    client = ClientModelInfo.__annotations__["format"]
    assert all(name in str(client) for name in formats.NAMES)


def test_every_zip_format_has_a_gateway_inspection() -> None:
    zipped = {f.name for f in formats.MODEL_FORMATS if f.is_archive is not None}
    assert zipped == set(gateway._ARCHIVE_INSPECTORS)


def test_the_gateway_and_the_worker_run_the_same_checks() -> None:
    assert formats.BY_NAME[formats.TORCH_EXPORT].check is checks.check_pt2
    assert formats.BY_NAME[formats.TORCHSCRIPT].check is checks.check_torchscript


def test_zip_archives_are_told_apart_by_their_members() -> None:
    pt2 = ["m/archive_format", "m/models/model.json", "m/data/weights/w"]
    script = ["m/code/__torch__/m.py", "m/data.pkl", "m/constants.pkl", "m/data/0"]
    hf = ["config.json", "model.safetensors"]
    assert formats.archive_format(pt2) is formats.BY_NAME[formats.TORCH_EXPORT]
    assert formats.archive_format(script) is formats.BY_NAME[formats.TORCHSCRIPT]
    assert formats.archive_format(hf) is formats.BY_NAME[formats.HUGGINGFACE]
    assert formats.archive_format(["m/data.pkl", "m/data/0"]) is None  # torch.save: refused
    assert formats.model_format("pickle") is None and formats.model_format(3) is None


def test_format_names_are_spelled_only_in_the_registry() -> None:
    """The worker and the gateway's model code name formats through tasks.artifacts.formats."""
    places = [
        *(ROOT / "tasks" / "worker").rglob("*.py"),
        *(ROOT / "service" / "blobs" / "formats").glob("*.py"),
        ROOT / "service" / "blobs" / "models.py",
    ]
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for path in places
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in formats.NAMES
    ]
    assert not spelled, spelled
