"""docs/configuration.md is generated from the settings model (service/config_docs.py): it
fails here when a setting, its default or its description changed without `make
configuration`."""

from __future__ import annotations

from pathlib import Path

from service import config_docs
from tasks.settings import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_committed_page_is_the_generated_one() -> None:
    assert PAGE.read_text() == config_docs.document(), (
        "docs/configuration.md is out of date: run `make configuration` "
        "(python -m service.config_docs > docs/configuration.md)"
    )


def test_every_setting_has_a_row_with_its_description() -> None:
    table = config_docs.table()
    for name, field in Settings.model_fields.items():
        row = next(r for r in table.splitlines() if r.startswith(f"| `SHARPNESS_{name.upper()}`"))
        assert field.description and " ".join(field.description.split()) in row.replace("\\|", "|")


def test_types_defaults_and_bounds_read_as_written_in_the_environment() -> None:
    assert config_docs.type_name(int | None) == "int | None"
    assert config_docs.type_name(list[str]) == "list[str]"
    fields = Settings.model_fields
    assert config_docs.default(fields["max_upload_bytes"]) == "5368709120 (5 GiB)"
    assert config_docs.default(fields["uri_schemes"]) == '`["file"]`'
    assert config_docs.default(fields["api_key"]) == "unset"
    assert config_docs.bounds(fields["retention_days"]) == "> 0"
    assert config_docs.bounds(fields["heartbeat_s"]) == "≥ 1"
