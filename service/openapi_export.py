"""Print the gateway's OpenAPI document as YAML: `python -m service.openapi_export`.

`make openapi` writes it to openapi.yaml, which is committed so that API changes show up in
review; tests/api/test_openapi.py fails when the two differ. The document is built from
default settings: it does not depend on the environment (no Redis is contacted).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from service.main import create_app
from tasks.settings import Settings


def document() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]


class _Dumper(yaml.SafeDumper):
    """Multi-line descriptions as literal blocks, so the committed file reads like the docs."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    return yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
