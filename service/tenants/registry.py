"""The tenants the gateway knows: read from SHARPNESS_TENANTS_FILE (JSON `{"tenants": [...]}`
or TOML `[[tenants]]`), plus SHARPNESS_API_KEY as one admin tenant named `admin`.

Keys are never stored: a tenant is found by the SHA-256 digest of the bearer key it sends,
compared with every tenant's digest in constant time. With no tenant configured the gateway is
open (a laptop): every caller is the one `local` admin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tasks.settings import Settings

DIGEST = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
QUOTA_NAMES = ("max_active_runs", "max_storage_bytes", "max_requests_per_minute")


class Role(StrEnum):
    """user: its own records only; ops: reads everything and cancels anything, changes
    nothing else; admin: everything."""

    user = "user"
    ops = "ops"
    admin = "admin"


@dataclass(frozen=True)
class Tenant:
    name: str
    role: Role
    key_sha256: str = ""
    quotas: dict[str, int] = field(default_factory=dict)

    @property
    def reads_all(self) -> bool:
        """Sees every tenant's records and uploads."""
        return self.role in (Role.ops, Role.admin)

    @property
    def acts_on_all(self) -> bool:
        """May delete or use any tenant's records and uploads."""
        return self.role == Role.admin


OPEN = Tenant(name="local", role=Role.admin)


class TenantsFileError(ValueError):
    """The tenants file cannot be used; the message names the entry and field at fault."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _tenant(entry: Any, where: str) -> Tenant:
    if not isinstance(entry, dict):
        raise TenantsFileError(f"{where}: expected a table with name, key_sha256 and role")
    name, key_sha256 = str(entry.get("name", "")), str(entry.get("key_sha256", "")).lower()
    if not NAME.fullmatch(name):
        raise TenantsFileError(f"{where}.name: {name!r} is not a name (letters, digits, _.-)")
    if not DIGEST.fullmatch(key_sha256):
        raise TenantsFileError(f"{where}.key_sha256: not a hex SHA-256 digest")
    try:
        role = Role(entry.get("role", "user"))
    except ValueError as e:
        raise TenantsFileError(f"{where}.role: one of user, ops, admin") from e
    quotas: dict[str, int] = {}
    for q in QUOTA_NAMES:
        if entry.get(q) is not None:
            value = entry[q]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TenantsFileError(f"{where}.{q}: a whole number >= 0")
            quotas[q] = value
    unknown = set(entry) - {"name", "key_sha256", "role", *QUOTA_NAMES}
    if unknown:
        raise TenantsFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    return Tenant(name=name, role=role, key_sha256=key_sha256, quotas=quotas)


def load_file(path: Path) -> list[Tenant]:
    """The tenants of a JSON or TOML file (TOML when the name ends in .toml)."""
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise TenantsFileError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from e
    entries = data.get("tenants") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TenantsFileError(f"{path}: expected a list under 'tenants'")
    tenants = [_tenant(e, f"tenants[{i}]") for i, e in enumerate(entries)]
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise TenantsFileError(f"{path}: tenant names must be unique")
    return tenants


class Tenants:
    """Every configured tenant; `find` answers who sends a key."""

    def __init__(self, tenants: list[Tenant], from_file: bool = False) -> None:
        self.tenants = tenants
        self.from_file = from_file  # tenants (not the one API key): /metrics needs a key too

    @classmethod
    def from_settings(cls, settings: Settings) -> Tenants:
        tenants = load_file(Path(settings.tenants_file)) if settings.tenants_file else []
        if settings.api_key:
            tenants.append(
                Tenant(name="admin", role=Role.admin, key_sha256=digest(settings.api_key))
            )
        return cls(tenants, from_file=bool(settings.tenants_file))

    @property
    def open(self) -> bool:
        """No tenant configured: every request is the local admin's."""
        return not self.tenants

    def find(self, key: str) -> Tenant | None:
        """The tenant whose key digest matches; every digest is compared, in constant time."""
        given = digest(key).encode()
        found = None
        for tenant in self.tenants:
            if hmac.compare_digest(given, tenant.key_sha256.encode()):
                found = tenant
        return found

    def by_name(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)
