"""The measure catalogue comes from the contract, and the gateway reaches no engine module."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from tasks.contract.measures import catalogue


def test_measures_list_the_catalogue(client: TestClient) -> None:
    body = client.get("/v1/measures").json()
    assert [m["name"] for m in body] == list(catalogue.measures())
    top = next(m for m in body if m["name"] == "top_eigenvalues")
    assert top["summary"]
    assert top["params_schema"]["properties"]["k"]["maximum"] == 200


def test_gateway_and_contract_import_no_engine_and_no_torch() -> None:
    code = (
        "import tasks.contract.spec, service.main, service.problems, service.jobs.measures\n"
        "import sys\n"
        "print(' '.join(m for m in sys.modules if m.startswith('tasks.engine') or m == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_data_parallel_capability_is_declared_with_each_measure() -> None:
    parallel = {m.name for m in catalogue.MEASURES if m.data_parallel}
    assert parallel == catalogue.DATA_PARALLEL_MEASURES
    assert {"lambda_max", "trace", "weight_norms"} <= parallel
    assert not {"adaptive_sharpness", "output_margin", "pacbayes_bound"} & parallel
