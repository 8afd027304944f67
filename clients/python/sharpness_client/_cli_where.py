"""Which service a `sharpness` command talks to, said once on stderr, and, when nothing
answers there, where `make run` says it listens.

`make run` (service.run_all) writes its API's URL to {SHARPNESS_DATA_DIR}/gateway.url while it
runs (default data directory: `var` in the folder it was started from). The CLI looks for that
file under $SHARPNESS_DATA_DIR, else as var/gateway.url in the current folder or one above it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sharpness_client._http import resolve_config

URL_FILE = "gateway.url"


def url_and_source(args: argparse.Namespace) -> tuple[str, str]:
    """The URL the command uses and where it came from."""
    if args.url:
        return args.url.rstrip("/"), "from --url"
    if os.environ.get("SHARPNESS_URL"):
        return os.environ["SHARPNESS_URL"].rstrip("/"), "from SHARPNESS_URL"
    return resolve_config(None, None)[0], "the default; set SHARPNESS_URL or --url"


def where(args: argparse.Namespace) -> str:
    """'URL (from --url)': for messages."""
    url, source = url_and_source(args)
    return f"{url} ({source})"


class Banner:
    """Says once, on stderr, which service answered (`sharpness: service URL (from ...)`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.said = args, False

    def say(self) -> None:
        if self.said:
            return
        self.said = True
        print(f"sharpness: service {where(self.args)}", file=sys.stderr, flush=True)


def url_file() -> Path | None:
    """The gateway.url that a running `make run` wrote, if one is found."""
    data_dir = os.environ.get("SHARPNESS_DATA_DIR")
    if data_dir:
        candidates = [Path(data_dir).expanduser() / URL_FILE]
    else:
        here = Path.cwd()
        candidates = [d / "var" / URL_FILE for d in (here, *here.parents)]
    return next((p for p in candidates if p.is_file()), None)


def unreachable_hint(args: argparse.Namespace) -> str:
    """What to do when nothing answered at the URL: the URL `make run` wrote, or how to find
    it."""
    url, source = url_and_source(args)
    found = url_file()
    written = None
    if found is not None:
        try:
            written = found.read_text().strip().rstrip("/") or None
        except OSError:
            written = None
    head = f"sharpness: the service URL is {url} ({source})"
    if written and written != url:
        return (
            f"{head}; nothing answers there, but `make run` wrote {found} saying it listens on "
            f"{written}: use --url {written} or export SHARPNESS_URL={written}"
        )
    if written:
        return (
            f"{head}, which `make run` wrote to {found}, but nothing answers: is it still "
            "starting, or did it stop without removing the file? Start it again with `make run`"
        )
    return (
        f"{head}; is the service running there? `make run` starts one on "
        "http://127.0.0.1:8000 (SHARPNESS_PORT=N make run on another port); while it runs, "
        "the `gateway` line of its banner and var/gateway.url in the folder it was started "
        "from name its URL"
    )
