"""Make a tenant's key: `python -m service.keys new NAME [--role user|ops|admin]
[--max-active-runs N] [--max-storage-bytes N] [--max-requests-per-minute N] [--toml]`.

Prints the new bearer key (give it to the tenant; it is shown once and never stored) and the
entry to add to SHARPNESS_TENANTS_FILE, which holds only the key's SHA-256 digest.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from service.tenants.registry import NAME, Role, digest

KEY_BYTES = 32


def entry(name: str, key: str, role: Role, quotas: dict[str, int]) -> dict[str, object]:
    """The tenants-file entry of a tenant with this key."""
    return {"name": name, "key_sha256": digest(key), "role": role.value, **quotas}


def toml_entry(values: dict[str, object]) -> str:
    lines = ["[[tenants]]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key for a tenant")
    new.add_argument("name")
    new.add_argument("--role", choices=[r.value for r in Role], default=Role.user.value)
    for quota in ("max-active-runs", "max-storage-bytes", "max-requests-per-minute"):
        new.add_argument(f"--{quota}", type=int, default=None)
    new.add_argument("--toml", action="store_true", help="print the entry as TOML")
    args = parser.parse_args(argv)
    if not NAME.fullmatch(args.name):
        parser.error(f"{args.name!r} is not a name (letters, digits, _ . -)")
    quotas = {
        q: getattr(args, q)
        for q in ("max_active_runs", "max_storage_bytes", "max_requests_per_minute")
        if getattr(args, q) is not None
    }
    key = secrets.token_urlsafe(KEY_BYTES)
    values = entry(args.name, key, Role(args.role), quotas)
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print("add to the tenants file (SHARPNESS_TENANTS_FILE):")
    print(toml_entry(values) if args.toml else json.dumps(values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
