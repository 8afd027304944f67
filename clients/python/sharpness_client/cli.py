"""The `sharpness` command line (argparse, so it needs nothing the SDK does not).

Exit codes, for scripts: 0 done, 1 the job failed or was cancelled, 2 waiting timed out,
3 the service refused the request (4xx/5xx, the problem is printed), 4 the service could not
be reached (its URL is printed), 5 the job (or trajectory) finished but a budget stopped a
measure before it converged (`converged` false, `diagnostics.limited_by` "iteration budget",
"basis budget" or "time"; its value is printed with the budget and the fix; a result limited by
the dtype's rounding converged and exits 0), 6 `measure`'s gate failed (`--fail-above`,
`--baseline` with `--max-increase`: one line on stderr says which limit and by how much; it
wins over 5), 64 bad command-line usage. `--json` prints the
API's JSON on stdout (progress, warnings and messages go to stderr), so
`sharpness measure ... --json | jq` works.
A reader that stops early (`| head`) ends the output quietly; the exit code is kept.
Every command that reached the service says which one, once, on stderr
(`sharpness: service URL (from SHARPNESS_URL)`); when none answers, it says where `make run`
listens (its data directory's gateway.url) or how to find it. `sharpness completion bash`
prints the shell completion script (argcomplete).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import sharpness_client._cli_trajectory as _cli_trajectory
import sharpness_client._cli_uploads as _cli_uploads
import sharpness_client._gate as _gate
import sharpness_client._render as _render
from sharpness_client._cli_args import (
    EXIT_NOT_CONVERGED,
    idempotency_option,
    quiet_convergence,
    run_actions,
    wait_options,
)
from sharpness_client._cli_where import Banner, unreachable_hint
from sharpness_client._inputs import data_plan, model_plan
from sharpness_client._spec import dataset_ref
from sharpness_client._version import __version__
from sharpness_client.client import Client
from sharpness_client.errors import (
    APIConnectionError,
    APIStatusError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
)
from sharpness_client.types import Job, JobStatus

EXIT_FAILED, EXIT_TIMEOUT, EXIT_API, EXIT_CONNECT, EXIT_USAGE = 1, 2, 3, 4, 64
__all__ = ["EXIT_NOT_CONVERGED", "main"]


_STDOUT = {"gone": False}  # the reader of stdout went away (`| head`): say nothing more


def _emit(text: str, file: Any = None) -> None:
    """Print and flush; when the reader has gone (`| head`), send the rest of stdout to
    /dev/null instead of raising, so the command ends quietly with its own exit code."""
    stream = file or sys.stdout
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:
        _drop_stdout()


def _drop_stdout() -> None:
    _STDOUT["gone"] = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _pairs(items: Sequence[str], sep: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, ok, value = item.partition(sep)
        if not ok or not key:
            raise argparse.ArgumentTypeError(f"{what} {item!r}: expected KEY{sep}VALUE")
        out[key] = value
    return out


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give an integer >= 0")
    return value


def _params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """--param trace.num_hvps=200 → {"trace": {"num_hvps": 200}} (values parsed as JSON
    when they are JSON: numbers, true/false, lists; else kept as text)."""
    out: dict[str, dict[str, Any]] = {}
    for dotted, raw in _pairs(items, "=", "--param").items():
        measure, ok, key = dotted.partition(".")
        if not ok or not key:
            raise argparse.ArgumentTypeError(f"--param {dotted!r}: expected MEASURE.PARAM=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(measure, {})[key] = value
    return out


def _common() -> _Parser:
    """Options every subcommand accepts, before or after its name (SUPPRESS keeps a value
    given before the subcommand from being reset by the subparser's default)."""
    p = _Parser(add_help=False)
    s = argparse.SUPPRESS
    p.add_argument("--url", default=s, help="service URL (default $SHARPNESS_URL)")
    p.add_argument("--api-key", default=s, help="bearer key (default $SHARPNESS_API_KEY)")
    p.add_argument("--json", action="store_true", default=s, help="print JSON for pipelines")
    return p


def _parser() -> argparse.ArgumentParser:
    common = _common()
    top = _Parser(prog="sharpness", description="Measure the sharpness of trained networks.")
    top.add_argument(
        "--version", action="version", version=f"sharpness {__version__} (sharpness-client)"
    )
    top.add_argument("--url", default=None, help="service URL (default $SHARPNESS_URL)")
    top.add_argument("--api-key", default=None, help="bearer key (default $SHARPNESS_API_KEY)")
    top.add_argument("--json", action="store_true", default=False, help="print JSON")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _measure_parser(sub, common)

    jobs = sub.add_parser("jobs", help="list, show, wait for, cancel or delete jobs")
    jsub = jobs.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ls = jsub.add_parser("list", parents=[common], help="newest first")
    ls.add_argument("--status", choices=[s.value for s in JobStatus])
    ls.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeat)")
    ls.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    run_actions(jsub, common, "job", plot="save a job's spectral density PNG")
    jdel = jsub.add_parser(
        "delete", parents=[common], help="delete a finished job's record (cancel it first)"
    )
    jdel.add_argument("id")
    _cli_trajectory.add_parsers(sub, common)
    _cli_uploads.add_parsers(sub, common)

    sub.add_parser("queue", parents=[common], help="queue depths, workers, running jobs")
    ms = sub.add_parser(
        "measures", parents=[common], help="the measures, or one with its parameters"
    )
    ms.add_argument("name", nargs="?", help="show this measure's parameters, defaults and bounds")
    c = sub.add_parser(
        "completion",
        help='print the shell completion script: eval "$(sharpness completion bash)"',
    )
    c.add_argument("shell", nargs="?", default="bash", choices=["bash", "zsh", "fish", "tcsh"])
    return top


def _measure_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """`sharpness measure`: what to upload, what to measure and how, the wait and the gate."""
    m = sub.add_parser("measure", parents=[common], help="upload, submit and wait for a job")
    m.add_argument(
        "model",
        help="model file (.pt2, TorchScript, safetensors), Hugging Face save_pretrained "
        "folder, or model id",
    )
    m.add_argument("--data", required=True, help="dataset file (.npz, .safetensors), id or URI")
    m.add_argument(
        "--eval-data", help="held-out dataset (file, id or URI): test metrics and the gap"
    )
    m.add_argument(
        "--initial-model", help="the model at initialisation, w₀ (file or id; same format)"
    )
    m.add_argument("--measure", action="append", required=True, help="measure name (repeat)")
    m.add_argument("--param", action="append", default=[], help="MEASURE.PARAM=VALUE")
    m.add_argument("--loss", choices=["cross_entropy", "mse"])
    m.add_argument("--mode", choices=["eval", "train"])
    m.add_argument(
        "--dropout-seed",
        type=_non_negative,
        metavar="N",
        help="--mode train: seeds the dropout masks, one per batch shared by every measure "
        "(default 0)",
    )
    m.add_argument("--device", choices=["auto", "cpu", "cuda"])
    m.add_argument(
        "--data-parallel",
        type=int,
        metavar="N",
        help="processes that measure the job together, the data split between them "
        "(one GPU each with --device cuda)",
    )
    m.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeat)")
    m.add_argument("--batch-size", type=int)
    m.add_argument("--max-samples", type=int)
    m.add_argument(
        "--inputs-key",
        help="the model's inputs in the dataset: an array name, or JSON for several: a list "
        '(positional) or an object keyword → array, e.g. \'{"input_ids": "ids"}\' '
        "(default: the names stored with the dataset, else recognised)",
    )
    m.add_argument("--targets-key", help="the targets array (default: as for --inputs-key)")
    m.add_argument("--output-key", help="which output is the logits (a dict key or tuple index)")
    m.add_argument(
        "--class-dim",
        type=int,
        choices=[1, -1],
        help="sequence outputs: -1 classes last (N, T, C), 1 classes on dim 1 (N, C, T)",
    )
    m.add_argument("--architecture", help="safetensors only: built-in architecture")
    m.add_argument("--config", help="safetensors only: JSON object of its arguments")
    m.add_argument(
        "--head",
        help="Hugging Face folder only, when config.json's architectures name no head: "
        "sequence_classification, token_classification, causal_lm, masked_lm, seq2seq_lm, "
        "image_classification",
    )
    m.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    idempotency_option(m, "job")
    wait_options(m)
    _gate.add_options(m)


def _out(args: argparse.Namespace, obj: Any, text: str) -> None:
    if args.json:
        data = [o.model_dump(mode="json") for o in obj] if isinstance(obj, list) else obj
        if hasattr(data, "model_dump_json"):
            _emit(data.model_dump_json(indent=2))
        else:
            _emit(json.dumps(data, indent=2))
    else:
        _emit(text)


def _finish(args: argparse.Namespace, job: Job) -> int:
    """Print the job (warnings and non-convergence included; on stderr with --json) and
    return its exit code: 1 failed or cancelled, 5 finished but not converged, else 0."""
    _out(args, job, _render.job(job))
    if args.json:
        for line in _render.notices(job):
            _emit(f"sharpness: {line}", sys.stderr)
    if job.status in (JobStatus.failed, JobStatus.cancelled):
        if args.json and job.error is not None:
            _emit(
                f"sharpness: job {job.status.value}: {job.error.detail or job.error.title}",
                sys.stderr,
            )
        return EXIT_FAILED
    if _render.not_converged(job):
        return EXIT_NOT_CONVERGED
    return 0


def _wait(client: Client, args: argparse.Namespace, job_id: str) -> int:
    return _finish(args, _waited(client, args, job_id))


def _waited(client: Client, args: argparse.Namespace, job_id: str) -> Job:
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    with quiet_convergence():  # _finish's notices say it, with exit code 5
        return client.jobs.wait(
            job_id,
            timeout=args.timeout,
            poll_interval=args.poll_interval,
            progress=progress,
            raise_on_failure=False,
        )


def _measure(client: Client, args: argparse.Namespace) -> int:
    gate = _gate.from_args(args)  # a malformed gate is refused before anything is uploaded
    mp, dp = model_plan(args.model, None), data_plan(args.data)
    config = json.loads(args.config) if args.config else None
    model = mp.ref or client.models.upload(
        mp.upload, architecture=args.architecture, config=config, head=args.head
    )
    names = _names(args)
    if dp.ref is None:
        dataset: Any = client.datasets.upload(dp.upload, **names)
    else:
        dataset = _ref_with(dp.ref, names)
    eval_dataset = initial_model = None
    if args.eval_data:
        ep = data_plan(args.eval_data)
        eval_dataset = ep.ref or client.datasets.upload(ep.upload)
    if args.initial_model:
        ip = model_plan(args.initial_model, None)
        initial_model = ip.ref or client.models.upload(
            ip.upload, architecture=args.architecture, config=config, head=args.head
        )
    job = client.jobs.create(
        model=model,
        dataset=dataset,
        measures=args.measure,
        params=_params(args.param),
        loss=args.loss,
        mode=args.mode,
        device=args.device,
        labels=_pairs(args.label, "=", "--label"),
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        eval_dataset=eval_dataset,
        initial_model=initial_model,
        output_key=args.output_key,
        class_dim=args.class_dim,
        data_parallel=args.data_parallel,
        dropout_seed=args.dropout_seed,
        idempotency_key=args.idempotency_key,
    )
    if not args.wait:
        _out(args, job, f"submitted job {job.id} ({job.status.value})")
        return 0
    args.banner.say()
    print(f"job {job.id} submitted", file=sys.stderr)
    done = _waited(client, args, job.id)
    return _gate.after(client, args, gate, done, _finish(args, done))


def _names(args: argparse.Namespace) -> dict[str, Any]:
    """--inputs-key (a name or JSON) and --targets-key, those given."""
    names: dict[str, Any] = {}
    if args.inputs_key:
        text = args.inputs_key.strip()
        try:
            names["inputs_key"] = json.loads(text) if text[:1] in "[{" else text
        except json.JSONDecodeError as e:
            raise SystemExit(f"sharpness: --inputs-key is not valid JSON ({e.msg})") from None
    if args.targets_key:
        names["targets_key"] = args.targets_key
    return names


def _ref_with(ref: Any, names: dict[str, Any]) -> Any:
    """An id or URI with the array names given on the command line."""
    if not names:
        return ref
    return dataset_ref(ref, **names)


def _jobs(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        labels = _pairs(args.label, "=", "--label")
        items: list[Job] = []
        for j in client.jobs.list(status=args.status, labels=labels, limit=min(args.limit, 200)):
            if len(items) >= args.limit:
                break
            items.append(j)
        _out(args, items, _render.jobs(items))
        return 0
    if args.action == "show":
        job = client.jobs.get(args.id)
        _out(args, job, _render.job(job))
        return 0
    if args.action == "cancel":
        job = client.jobs.cancel(args.id)
        _out(args, job, f"job {job.id}: {job.status.value}, cancel requested")
        return 0
    if args.action == "plot":
        client.jobs.plot(args.id, "spectral_density", args.path)
        print(f"saved {args.path}", file=sys.stderr)
        return 0
    if args.action == "delete":
        client.jobs.delete(args.id)
        _out(args, {"id": args.id, "deleted": True}, f"deleted job {args.id}")
        return 0
    return _wait(client, args, args.id)


def _run(args: argparse.Namespace) -> int:
    with Client(args.url, args.api_key) as client:
        if args.command == "measure":
            return _measure(client, args)
        if args.command == "jobs":
            return _jobs(client, args)
        if args.command == "trajectory":
            return _cli_trajectory.run(client, args, _out)
        if args.command in ("models", "datasets"):
            return _cli_uploads.run(client, args, _out)
        if args.command == "queue":
            q = client.queue.get()
            _out(args, q, _render.queue(q))
            return 0
        ms = client.measures.list()
        if args.name is None:
            rows = [[m.name, m.summary] for m in ms]
            hint = "\n\nparameters of one: sharpness measures NAME"
            _out(args, ms, _render.table(["MEASURE", "SUMMARY"], rows) + hint)
            return 0
        found = next((m for m in ms if m.name == args.name), None)
        if found is None:
            names = ", ".join(m.name for m in ms)
            raise argparse.ArgumentTypeError(
                f"unknown measure {args.name!r}; the service offers: {names}"
            )
        _out(args, found, _render.measure(found))
        return 0


def _completion(shell: str) -> int:
    try:
        import argcomplete
    except ImportError:
        print(
            "sharpness: shell completion needs argcomplete: pip install argcomplete",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _emit(argcomplete.shellcode(["sharpness"], shell=shell).rstrip("\n"))
    return 0


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete; exits) when this run is one."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sharpness` script; returns (and exits with) the exit code."""
    try:
        code = _main(argv)
    except BrokenPipeError:  # the reader went away while argparse or a message wrote
        _drop_stdout()
        code = 0
    if argv is None:
        sys.exit(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    _autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command == "completion":
        return _completion(args.shell)
    args.banner = Banner(args)
    answered = True
    try:
        code = _run(args)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    except JobTimeoutError as e:
        print(f"sharpness: {e}", file=sys.stderr)
        code = EXIT_TIMEOUT
    except (JobFailedError, JobCancelledError) as e:
        print(f"sharpness: {e}", file=sys.stderr)
        code = EXIT_FAILED
    except APIStatusError as e:
        print(f"sharpness: {e}", file=sys.stderr)
        for err in e.errors:
            print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
        code = EXIT_API
    except APIConnectionError as e:
        answered = False
        print(f"sharpness: {e}", file=sys.stderr)
        print(unreachable_hint(args), file=sys.stderr)
        code = EXIT_CONNECT
    except BrokenPipeError:
        _drop_stdout()
        code = 0
    except (OSError, ValueError) as e:
        print(f"sharpness: {e}", file=sys.stderr)
        code = EXIT_USAGE
    if answered and code != EXIT_USAGE and not _STDOUT["gone"]:
        args.banner.say()
    return code


if __name__ == "__main__":
    main()
