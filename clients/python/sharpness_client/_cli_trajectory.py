"""`sharpness trajectory ...`: submit checkpoints of a run, show, wait, cancel, save the picture.

sharpness trajectory create --data DATA --checkpoint c0.pt2:0.1:0 --checkpoint c1.pt2:0.1:500
    [--optimizer sgd --momentum 0.9]
    [--optimizer adam --beta1 0.9 --optimizer-state s0.safetensors --optimizer-state s1...]
sharpness trajectory show ID          sharpness trajectory plot ID out.png
sharpness jobs plot ID out.png        (a job's spectral density)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import sharpness_client._converged as _converged
import sharpness_client._render as _render
from sharpness_client._cli_args import (
    EXIT_NOT_CONVERGED,
    idempotency_option,
    quiet_convergence,
    run_actions,
    wait_options,
)
from sharpness_client._inputs import data_plan, model_plan
from sharpness_client._spec import model_id
from sharpness_client.client import Client
from sharpness_client.types import JobStatus, Trajectory


def checkpoint_arg(text: str) -> tuple[str, float, int | None]:
    """MODEL:LR[:STEP] — MODEL a file or an uploaded id."""
    model, sep, rest = text.rpartition(":")
    parts = text.split(":")
    try:
        if len(parts) >= 3 and parts[-1].isdigit() and _is_float(parts[-2]):
            return ":".join(parts[:-2]), float(parts[-2]), int(parts[-1])
        if sep and _is_float(rest):
            return model, float(rest), None
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"--checkpoint {text!r}: expected MODEL:LEARNING_RATE[:STEP]")


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    tr = sub.add_parser(
        "trajectory", help="edge of stability and eigenvector rotation along checkpoints"
    )
    ts = tr.add_subparsers(dest="action", required=True, parser_class=type(tr))
    c = ts.add_parser("create", parents=[common], help="upload checkpoints, submit, wait")
    c.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        type=checkpoint_arg,
        help="MODEL:LEARNING_RATE[:STEP], in training order (repeat)",
    )
    c.add_argument("--data", required=True, help="dataset file (.npz, .safetensors), id or URI")
    c.add_argument("--k", type=int, help="top eigenvectors compared (default 3)")
    c.add_argument("--tol", type=float)
    c.add_argument("--max-iter", type=int)
    c.add_argument("--batch-size", type=int)
    c.add_argument("--max-samples", type=int)
    c.add_argument("--loss", choices=["cross_entropy", "mse"])
    c.add_argument("--mode", choices=["eval", "train"])
    c.add_argument("--device", choices=["auto", "cpu", "cuda"])
    c.add_argument(
        "--optimizer",
        choices=["gd", "sgd", "adam"],
        help="the run's optimizer, which sets the edge (default gd: 2/η)",
    )
    c.add_argument("--momentum", type=float, help="sgd: β, edge (2+2β)/η")
    c.add_argument("--nesterov", action="store_true", default=None, help="sgd: Nesterov")
    c.add_argument("--beta1", type=float, help="adam: β₁ (edge (2+2β₁)/((1−β₁)η) on P⁻¹H)")
    c.add_argument("--beta2", type=float, help="adam: β₂")
    c.add_argument("--eps", type=float, help="adam: ε")
    c.add_argument(
        "--optimizer-state",
        action="append",
        help="adam: a .safetensors (step, exp_avg_sq.<name>) or an uploaded id, one per "
        "checkpoint in the same order (repeat)",
    )
    c.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    idempotency_option(c, "trajectory")
    c.add_argument("--plot", help="when finished, save the PNG here")
    wait_options(c)
    run_actions(ts, common, "trajectory", plot="save the trajectory's PNG")


def render(t: Trajectory) -> str:
    head = f"trajectory {t.id}: {t.status.value}, {len(t.points)}/{len(t.spec.checkpoints)} "
    head += f"checkpoints, k={t.spec.k}"
    opt = t.spec.optimizer.name if t.spec.optimizer else "gd"
    head += f", optimizer {opt}"
    rows = [
        [p.index, p.step, f"{p.learning_rate:g}", f"{p.lambda_max:.6g}",
         "" if p.preconditioned_lambda_max is None else f"{p.preconditioned_lambda_max:.6g}",
         "" if p.stability_threshold is None else f"{p.stability_threshold:.6g}",
         f"{p.stability_ratio:.4g}", "beyond" if p.beyond_edge else "stable",
         _render.converged({"converged": p.converged, "limited_by": _converged.limited_by(p)})]
        for p in t.points
    ]  # fmt: skip
    cols = ["#", "STEP", "LR", "λMAX", "λMAX(P⁻¹H)", "EDGE", "RATIO", "", "CONVERGED"]
    out = [head, _render.table(cols, rows)]
    reasons = {p.mode_reason for p in t.points if p.mode_reason}
    out.extend(f"mode: {r}" for r in sorted(reasons))
    if t.overlaps:
        orows = [
            [f"{o.start}→{o.end}", f"{o.top_overlap:.4f}", f"{o.subspace_overlap:.4f}"]
            for o in t.overlaps
        ]
        out.append(_render.table(["PAIR", "|<v1,v1'>|", "SUBSPACE"], orows))
        if t.edge_analysis.get("summary"):
            out.append(f"edge: {t.edge_analysis['summary']}")
    if t.error is not None:
        out.append(f"error: {t.error.title}: {t.error.detail}")
    out.extend(notices(t))
    return "\n".join(out)


def notices(t: Trajectory) -> list[str]:
    """One line per checkpoint that did not converge (the budget and the fix) and per
    checkpoint warning."""
    out = [f"NOT CONVERGED {m.text()}" for m in _converged.misses(t)]
    for p in t.points:
        out.extend(f"warning checkpoint {p.index}: {w}" for w in p.warnings)
    return out


def run(client: Client, args: argparse.Namespace, out: Callable[[Any, Any, str], None]) -> int:
    """Returns the exit code: 1 when the trajectory failed or was cancelled, 5 when it finished
    but a budget stopped a checkpoint's λmax before it converged, else 0."""
    if args.action == "plot":
        client.trajectories.plot(args.id, args.path)
        print(f"saved {args.path}", file=sys.stderr)
        return 0
    if args.action == "show":
        t = client.trajectories.get(args.id)
    elif args.action == "cancel":
        t = client.trajectories.cancel(args.id)
    else:
        if args.action == "create":
            t = _create(client, args)
            if not args.wait:
                out(args, t, f"submitted trajectory {t.id} ({t.status.value})")
                return 0
            print(f"trajectory {t.id} submitted", file=sys.stderr)
            tid = t.id
        else:
            tid = args.id
        with quiet_convergence():  # the notices say it, with exit code 5
            t = client.trajectories.wait(
                tid,
                timeout=args.timeout,
                poll_interval=args.poll_interval,
                progress=args.progress if args.progress is not None else sys.stderr.isatty(),
                raise_on_failure=False,
            )
        if getattr(args, "plot", None) and t.points:
            client.trajectories.plot(t.id, args.plot)
    out(args, t, render(t))
    waited = args.action in ("create", "wait")
    if waited and args.json:
        for line in notices(t):
            print(f"sharpness: {line}", file=sys.stderr)
    if t.status in (JobStatus.failed, JobStatus.cancelled):
        return 1
    return EXIT_NOT_CONVERGED if waited and _converged.misses(t) else 0


def _create(client: Client, args: argparse.Namespace) -> Trajectory:
    checkpoints: list[Any] = []
    for model, lr, step in args.checkpoint:
        mp = model_plan(model, None)
        ref = mp.ref or client.models.upload(mp.upload)
        checkpoints.append((ref, lr, step))
    states = args.optimizer_state or []
    if states:
        if len(states) != len(checkpoints):
            raise SystemExit(
                f"--optimizer-state: {len(states)} given for {len(checkpoints)} checkpoints; "
                "give one per checkpoint, in the same order"
            )
        checkpoints = [
            {
                "model": model_id(ref),
                "learning_rate": lr,
                "step": step,
                "optimizer_state": _state(client, f),
            }
            for (ref, lr, step), f in zip(checkpoints, states, strict=True)
        ]
    optimizer: dict[str, Any] | None = None
    if args.optimizer is not None:
        optimizer = {"name": args.optimizer}
        for name in ("momentum", "nesterov", "beta1", "beta2", "eps"):
            if getattr(args, name) is not None:
                optimizer[name] = getattr(args, name)
    dp = data_plan(args.data)
    dataset = dp.ref or client.datasets.upload(dp.upload)
    options = ("k", "tol", "max_iter", "loss", "mode", "device", "batch_size", "max_samples")
    return client.trajectories.create(
        checkpoints=checkpoints,
        dataset=dataset,
        optimizer=optimizer,
        idempotency_key=args.idempotency_key,
        **{name: getattr(args, name) for name in options},
    )


def _state(client: Client, source: str) -> str:
    """An uploaded optimizer state's id: a 64-hex id as is, a file uploaded."""
    import os
    import re

    if re.fullmatch(r"[0-9a-f]{64}", source) and not os.path.exists(source):
        return source
    return client.trajectories.upload_optimizer_state(source).id
