"""The tenants file (JSON and TOML), its refusals, the key lookup and `python -m service.keys`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from service import keys
from service.tenants.registry import Role, Tenants, TenantsFileError, digest, load_file
from tasks.settings import Settings

A, OPS = "key-a", "key-ops"
ENTRIES = [
    {"name": "a", "key_sha256": digest(A), "role": "user", "max_active_runs": 2},
    {"name": "oncall", "key_sha256": digest(OPS), "role": "ops"},
]


def test_json_and_toml_read_the_same(tmp_path: Path) -> None:
    as_json = tmp_path / "t.json"
    as_json.write_text(json.dumps({"tenants": ENTRIES}))
    as_toml = tmp_path / "t.toml"
    as_toml.write_text("\n\n".join(keys.toml_entry(e) for e in ENTRIES))
    assert load_file(as_json) == load_file(as_toml)
    a, ops = load_file(as_toml)
    assert (a.role, a.quotas) == (Role.user, {"max_active_runs": 2})
    assert ops.role == Role.ops and ops.reads_all and not ops.acts_on_all


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "a b", "key_sha256": "0" * 64}, "tenants[0].name"),
        ({"name": "a", "key_sha256": "abc"}, "tenants[0].key_sha256"),
        ({"name": "a", "key_sha256": "0" * 64, "role": "root"}, "tenants[0].role"),
        ({"name": "a", "key_sha256": "0" * 64, "max_active_runs": -1}, "max_active_runs"),
        ({"name": "a", "key_sha256": "0" * 64, "key": "plain"}, "unknown field(s) key"),
    ],
)
def test_a_broken_entry_is_named(tmp_path: Path, entry: dict, field: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tenants": [entry]}))
    with pytest.raises(TenantsFileError, match=re.escape(field)):
        load_file(path)


def test_names_are_unique(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tenants": [ENTRIES[0], ENTRIES[0]]}))
    with pytest.raises(TenantsFileError, match="unique"):
        load_file(path)


def test_lookup_by_key_and_the_api_key_admin(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tenants": ENTRIES}))
    tenants = Tenants.from_settings(Settings(tenants_file=path, api_key="the-admin-key"))
    assert tenants.find(A).name == "a"  # type: ignore[union-attr]
    assert tenants.find(OPS).name == "oncall"  # type: ignore[union-attr]
    admin = tenants.find("the-admin-key")
    assert admin is not None and admin.name == "admin" and admin.role == Role.admin
    assert tenants.find("nope") is None and tenants.from_file
    assert Tenants.from_settings(Settings()).open
    keyed = Tenants.from_settings(Settings(api_key="k"))
    assert not keyed.open and not keyed.from_file


def test_keys_new_prints_a_key_and_its_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert keys.main(["new", "team-x", "--role", "ops", "--max-requests-per-minute", "60"]) == 0
    key_line, _, entry_line = capsys.readouterr().out.strip().splitlines()
    key = key_line.rsplit(" ", 1)[-1]
    entry = json.loads(entry_line)
    assert entry == {
        "name": "team-x",
        "key_sha256": digest(key),
        "role": "ops",
        "max_requests_per_minute": 60,
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tenants": [entry]}))
    assert Tenants(load_file(path)).find(key) is not None
