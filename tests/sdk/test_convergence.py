"""Exit codes and the SDK agree with `converged`, against a scripted local server: a result a
budget stopped (`diagnostics.limited_by` "iteration budget", "basis budget", "time") exits 5
and warns NotConvergedWarning (or raises, on request) naming the measure, the budget and the
fix; a result converged to the tolerance or to the dtype's rounding exits 0 and warns nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import warnings
from typing import Any

import pytest

from sharpness_client import (
    AsyncClient,
    Client,
    JobStatus,
    NotConvergedError,
    NotConvergedWarning,
    cli,
)
from tests.sdk.scripted_server import Reply, scripted

JOB_ID = "1" * 32


def job(
    results: dict[str, Any], status: str = "succeeded", params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A finished job record holding `results` (one measure request per result)."""
    return {
        "id": JOB_ID,
        "status": status,
        "queue": "cpu",
        "created_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:05Z",
        "spec": {
            "model": "a" * 64,
            "dataset": {"id": "b" * 64},
            "measures": [
                {"name": name, "params": (params or {}).get(name, {})} for name in results
            ],
        },
        "results": results,
    }


def result(converged: bool | None, limited_by: str | None = None, **diag: Any) -> dict[str, Any]:
    diagnostics = dict(diag)
    if limited_by is not None:
        diagnostics["limited_by"] = limited_by
    return {
        "value": 1.25,
        "converged": converged,
        "hvps": 12,
        "seconds": 0.1,
        "diagnostics": diagnostics,
        "warnings": [],
    }


TOLERANCE = job({"lambda_max": result(True, "tolerance", residual_bound=1e-9, iterations=9)})
ROUNDING = job({"lambda_max": result(True, "float32 rounding", residual_bound=3e-6, iterations=14)})
BUDGET = job(
    {"lambda_max": result(False, "iteration budget", residual_bound=0.17, iterations=2)},
    params={"lambda_max": {"max_iter": 2}},
)
NO_LIMITED_BY = job({"lambda_max": result(False, residual_bound=0.17, iterations=2)})


def wait(record: dict[str, Any], **kw: Any):
    with scripted([Reply(200, record)]) as server, Client(server.url) as client:
        return client.jobs.wait(JOB_ID, poll_interval=0.05, **kw)


@pytest.mark.parametrize("record", [TOLERANCE, ROUNDING], ids=["tolerance", "float32-rounding"])
def test_converged_results_warn_nothing(record: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = wait(record)
        assert wait(record, raise_on_not_converged=True).id == done.id
    assert done.results["lambda_max"].converged is True
    assert (
        done.results["lambda_max"].limited_by
        == record["results"]["lambda_max"]["diagnostics"]["limited_by"]
    )


def test_budget_stopped_result_warns_with_the_budget_and_the_fix() -> None:
    with pytest.warns(NotConvergedWarning) as caught:
        done = wait(BUDGET)
    assert done.status == JobStatus.succeeded and done.value("lambda_max") == 1.25
    [w] = caught.list
    text = str(w.message)
    assert "lambda_max" in text and "iteration budget" in text
    assert "raise lambda_max.max_iter (now 2)" in text and JOB_ID in text
    assert w.filename == __file__  # points at the caller's line, not inside the SDK
    assert w.message.measures == ["lambda_max"] and w.message.run.id == JOB_ID


def test_raise_on_not_converged_raises_with_the_job() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raising replaces the warning
        with pytest.raises(NotConvergedError, match="iteration budget") as info:
            wait(BUDGET, raise_on_not_converged=True)
    assert info.value.job.value("lambda_max") == 1.25
    assert info.value.measures == ["lambda_max"]
    assert info.value.limited_by == {"lambda_max": "iteration budget"}


def test_a_service_without_limited_by_is_read_by_converged() -> None:
    with pytest.warns(NotConvergedWarning, match="did not reach the requested accuracy"):
        wait(NO_LIMITED_BY)


def test_per_layer_and_other_budgets_are_named() -> None:
    layered = result(True, "tolerance")
    layered["per_layer"] = {
        "0": result(True, "float64 rounding"),
        "2": result(False, "iteration budget", iterations=100),
    }
    record = job(
        {
            "trace": layered,
            "top_eigenvalues": result(False, "basis budget"),
            "frobenius": result(False, "time"),
        }
    )
    with pytest.warns(NotConvergedWarning) as caught:
        wait(record)
    msg = caught.list[0].message
    assert msg.measures == ["trace[2]", "top_eigenvalues", "frobenius"]
    text = str(msg)
    assert "trace[2] (100 iterations): stopped by its iteration budget" in text
    assert "raise trace.num_hvps" in text  # the trace's budget is its products
    assert "raise top_eigenvalues.max_basis" in text
    assert "frobenius ran out of time" in text


def test_cancelled_job_is_returned_as_it_is() -> None:
    record = copy.deepcopy(BUDGET)
    record["status"] = "cancelled"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wait(record, raise_on_not_converged=True).status == JobStatus.cancelled


def test_measure_warns_or_raises_and_sends_no_client_option() -> None:
    queued = {**BUDGET, "status": "queued", "results": {}}
    replies = [Reply(202, queued), Reply(200, BUDGET)]
    with scripted(replies) as server, Client(server.url) as client:
        with pytest.raises(NotConvergedError):
            client.measure(
                "a" * 64,
                "b" * 64,
                ["lambda_max"],
                params={"lambda_max": {"max_iter": 2}},
                poll_interval=0.05,
                raise_on_not_converged=True,
            )
        with pytest.warns(NotConvergedWarning, match="lambda_max"):
            done = client.measure("a" * 64, "b" * 64, ["lambda_max"], poll_interval=0.05)
        assert done.value("lambda_max") == 1.25
    posts = [json.loads(s.body) for s in server.seen if s.method == "POST"]
    assert len(posts) == 2
    for body in posts:
        assert "raise_on_not_converged" not in json.dumps(body)
    # unset arguments are not sent: the server's defaults apply
    assert posts[1]["measures"] == [{"name": "lambda_max"}]
    assert set(posts[1]) == {"model", "dataset", "measures"}


def test_async_wait_warns_at_the_callers_line() -> None:
    async def go():
        async with AsyncClient(server.url) as client:
            return await client.jobs.wait(JOB_ID, poll_interval=0.05)

    with scripted([Reply(200, BUDGET)]) as server:
        with pytest.warns(NotConvergedWarning) as caught:
            asyncio.run(go())
    assert caught.list[0].filename == __file__


# ------------------------------------------------------------------------------- the CLI
def run_cli(record: dict[str, Any], *extra: str, capsys) -> tuple[int, str, str]:
    with scripted([Reply(200, record)]) as server, warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI prints notices, never a Python warning
        code = cli.main(["jobs", "wait", JOB_ID, "--url", server.url, "--poll-interval", "0.05"])
        if extra:
            assert code == cli.main(["jobs", "wait", JOB_ID, "--url", server.url, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_converged_to_tolerance_exits_zero(capsys) -> None:
    code, out, err = run_cli(TOLERANCE, capsys=capsys)
    assert code == 0, out + err
    assert "NOT CONVERGED" not in out + err
    row = next(line for line in out.splitlines() if line.startswith("lambda_max"))
    assert row.split()[3] == "yes" and "tolerance" not in row


def test_cli_converged_to_float32_rounding_exits_zero_and_says_so(capsys) -> None:
    code, out, err = run_cli(ROUNDING, "--json", capsys=capsys)
    assert code == 0, out + err
    assert "NOT CONVERGED" not in out + err
    row = next(line for line in out.splitlines() if line.startswith("lambda_max"))
    assert "yes (float32 rounding)" in row
    assert "note lambda_max: converged to float32 rounding" in out


def test_cli_budget_stopped_exits_five_naming_the_budget_and_the_fix(capsys) -> None:
    code, out, err = run_cli(BUDGET, "--json", capsys=capsys)
    assert code == cli.EXIT_NOT_CONVERGED, out + err
    row = next(line for line in out.splitlines() if line.startswith("lambda_max"))
    assert "NO (iteration budget)" in row
    notice = (
        "NOT CONVERGED lambda_max (residual bound 0.17, 2 iterations): stopped by its "
        "iteration budget before the requested accuracy; raise lambda_max.max_iter (now 2)"
    )
    assert notice in out
    assert notice in err  # --json: the notice on stderr


def test_cli_most_negative_budget_is_a_note_not_a_failure(capsys) -> None:
    top = result(True, "float32 rounding")
    top["diagnostics"].update(most_negative_converged=False, most_negative_limited_by="time")
    code, out, err = run_cli(job({"top_eigenvalues": top}), capsys=capsys)
    assert code == 0, out + err  # the top eigenvalues converged
    assert "note top_eigenvalues: the most negative eigenvalue stopped by its time budget" in out


def test_cli_per_layer_non_convergence_exits_five(capsys) -> None:
    layered = result(True, "tolerance")
    layered["per_layer"] = {"0": result(True), "2": result(False, "iteration budget")}
    code, out, err = run_cli(job({"trace": layered}), capsys=capsys)
    assert code == cli.EXIT_NOT_CONVERGED, out + err
    assert "NOT CONVERGED trace[2]: stopped by its iteration budget" in out
    assert "raise trace.num_hvps" in out


# -------------------------------------------------------------------------- trajectories
def trajectory(converged: bool, limited_by: str | None = None) -> dict[str, Any]:
    point = {
        "index": 0,
        "model": "a" * 64,
        "step": 0,
        "learning_rate": 0.1,
        "lambda_max": 3.0,
        "eigenvalues": [3.0],
        "stability_ratio": 0.15,
        "beyond_edge": False,
        "residual_bounds": [0.2],
        "converged": converged,
        "iterations": 3,
        "hvps": 3,
        "seconds": 0.1,
        "dim": 39,
    }
    if limited_by is not None:
        point["limited_by"] = limited_by
    return {
        "id": "2" * 32,
        "status": "succeeded",
        "queue": "cpu",
        "created_at": "2026-01-01T00:00:00Z",
        "spec": {
            "checkpoints": [{"model": "a" * 64, "learning_rate": 0.1, "step": 0}],
            "dataset": {"id": "b" * 64},
            "k": 1,
            "max_iter": 3,
        },
        "points": [point],
    }


@pytest.mark.parametrize(
    ("converged", "limited_by", "code"),
    [(True, None, 0), (True, "float32 rounding", 0), (False, "iteration budget", 5)],
)
def test_trajectory_wait_exit_code_and_warning(converged, limited_by, code, capsys) -> None:
    record = trajectory(converged, limited_by)
    with scripted([Reply(200, record)]) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            args = ["trajectory", "wait", record["id"], "--url", server.url]
            assert cli.main(args) == code
            assert cli.main(["trajectory", "show", record["id"], "--url", server.url]) == 0
        out = capsys.readouterr().out
        with Client(server.url) as client, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.trajectories.wait(record["id"])
    assert [w.category for w in caught] == ([NotConvergedWarning] if code else [])
    if code:
        assert (
            "NOT CONVERGED checkpoint 0 (step 0)" in out
            and "raise the trajectory's max_iter" in out
        )
    else:
        assert "NOT CONVERGED" not in out
