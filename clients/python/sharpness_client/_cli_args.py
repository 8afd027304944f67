"""Arguments the `sharpness` subcommands share: how to wait, and the actions on one run (a job
or a trajectory) by id: show, cancel, wait, plot."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sharpness_client.errors import NotConvergedWarning

EXIT_NOT_CONVERGED = 5


@contextmanager
def quiet_convergence() -> Iterator[None]:
    """No NotConvergedWarning from `wait`: the CLI prints its own notices and exits 5."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        yield


def idempotency_option(p: argparse.ArgumentParser, noun: str) -> None:
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help=f"submit under this key: the same key again (24 h) returns the {noun} made the "
        "first time instead of a new one (default: a fresh key for this command, reused on "
        "its retries)",
    )


def wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


def run_actions(actions: Any, common: argparse.ArgumentParser, noun: str, plot: str) -> None:
    """`show ID`, `cancel ID`, `wait ID` (with the wait options) and `plot ID PATH` (`plot`:
    its help) under `actions`, the subparsers of the `noun`'s command."""
    for name, text in (("show", f"print a {noun}"), ("cancel", f"cancel a {noun}")):
        actions.add_parser(name, parents=[common], help=text).add_argument("id")
    w = actions.add_parser("wait", parents=[common], help=f"wait until a {noun} finishes")
    w.add_argument("id")
    wait_options(w)
    p = actions.add_parser("plot", parents=[common], help=plot)
    p.add_argument("id")
    p.add_argument("path")
