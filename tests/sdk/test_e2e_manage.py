"""The CLI as a tool that manages what it uploads, against a real running service (real HTTP,
gateway, worker and Redis): `models` and `datasets` list/show/upload/delete, `jobs delete`,
`--version`, shell completion, which service answered, the path id wording, and the 409 that
keeps a model or dataset a queued or running job or trajectory uses."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from sharpness_client import __version__, cli
from sharpness_client._convert import arrays_to_npz, export_module
from tasks.store.local_redis import free_port
from tests.sdk import models as M
from tests.sdk.test_e2e_cli import SCRIPT, sharpness

pytestmark = pytest.mark.integration


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    seed = int.from_bytes(os.urandom(2), "little")  # bytes of their own: ids no other test has
    x, y = M.data(n=24, seed=seed)
    out = {"model": tmp_path / "mlp.pt2", "data": tmp_path / "labelled.npz"}
    out["model"].write_bytes(export_module(M.mlp(seed=seed), x[:2]))
    np.savez(out["data"], feats=x, label=y)  # names nothing recognises
    return out


def _json(proc: subprocess.CompletedProcess[str]) -> object:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _one_banner(proc: subprocess.CompletedProcess[str], url: str) -> None:
    """Every command says once, on stderr, which service answered and where the URL came from."""
    line = f"sharpness: service {url} (from SHARPNESS_URL)"
    assert proc.stderr.count(line) == 1, proc.stderr


def test_models_and_datasets_upload_list_show(service_url: str, files) -> None:
    up = sharpness("models", "upload", str(files["model"]), "--json", url=service_url)
    model = _json(up)
    assert model["format"] == "torch_export" and len(model["id"]) == 64
    _one_banner(up, service_url)

    data = _json(
        sharpness(
            "datasets",
            "upload",
            str(files["data"]),
            "--inputs-key",
            "feats",
            "--targets-key",
            "label",
            "--json",
            url=service_url,
        )
    )
    assert data["inputs_key"] == "feats" and data["targets_key"] == "label"

    listed = sharpness("models", "list", "--json", url=service_url)
    assert model["id"] in [m["id"] for m in _json(listed)]
    _one_banner(listed, service_url)
    table = sharpness("models", "list", url=service_url)
    assert table.returncode == 0 and table.stdout.split()[:2] == ["ID", "FORMAT"]
    assert model["id"] in table.stdout
    _one_banner(table, service_url)
    assert data["id"] in [
        d["id"] for d in _json(sharpness("datasets", "list", "--json", url=service_url))
    ]
    dtable = sharpness("datasets", "list", url=service_url)
    assert data["id"] in dtable.stdout and "label" in dtable.stdout

    shown = sharpness("models", "show", model["id"], url=service_url)
    assert shown.returncode == 0 and "torch_export" in shown.stdout and model["id"] in shown.stdout
    dshown = sharpness("datasets", "show", data["id"], url=service_url)
    assert dshown.returncode == 0, dshown.stderr
    assert re.search(r"targets\s+label", dshown.stdout) and "array feats" in dshown.stdout

    # the upload stored the names: a job naming none measures with them
    code = cli.main(
        ["measure", model["id"], "--data", data["id"], "--measure", "lambda_max"]
        + ["--timeout", "120", "--poll-interval", "0.2"]
    )
    assert code == 0


def _queued_job(url: str, model_id: str, data_id: str) -> str:
    """A job that stays queued: the test worker serves only the cpu queue."""
    r = httpx.post(
        f"{url}/v1/jobs",
        json={
            "model": model_id,
            "dataset": {"id": data_id},
            "measures": [{"name": "trace"}],
            "device": "cuda",
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_delete_in_use_is_refused_with_409_then_forced(service_url: str, files) -> None:
    model = _json(sharpness("models", "upload", str(files["model"]), "--json", url=service_url))
    data = _json(
        sharpness(
            "datasets", "upload", str(files["data"]), "--inputs-key", "feats",
            "--targets-key", "label", "--json", url=service_url,
        )
    )  # fmt: skip
    job_id = _queued_job(service_url, model["id"], data["id"])

    r = httpx.delete(f"{service_url}/v1/models/{model['id']}", timeout=30)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == "urn:sharpness:problem:in-use" and problem["status"] == 409
    assert f"job {job_id}" in problem["detail"] and "?force=true" in problem["detail"]
    assert f"sharpness jobs cancel {job_id}" in problem["detail"]

    refused = sharpness("datasets", "delete", data["id"], url=service_url)
    assert refused.returncode == cli.EXIT_API
    assert job_id in refused.stderr and "--force" in refused.stderr
    _one_banner(refused, service_url)
    assert httpx.get(f"{service_url}/v1/datasets/{data['id']}").status_code == 200

    # a trajectory that waits uses them too
    t = httpx.post(
        f"{service_url}/v1/trajectories",
        json={
            "checkpoints": [{"model": model["id"], "learning_rate": 0.1}] * 2,
            "dataset": {"id": data["id"]},
            "device": "cuda",
        },
        timeout=30,
    )
    assert t.status_code == 202, t.text
    r = httpx.delete(f"{service_url}/v1/models/{model['id']}", timeout=30)
    assert r.status_code == 409 and f"trajectory {t.json()['id']}" in r.json()["detail"]
    httpx.post(f"{service_url}/v1/trajectories/{t.json()['id']}/cancel", timeout=30)

    forced = sharpness("models", "delete", model["id"], "--force", url=service_url)
    assert forced.returncode == 0, forced.stderr
    assert f"deleted model {model['id']}" in forced.stdout
    assert httpx.get(f"{service_url}/v1/models/{model['id']}").status_code == 404

    # the job still waits: `jobs delete` says to cancel it first
    early = sharpness("jobs", "delete", job_id, url=service_url)
    assert early.returncode == cli.EXIT_API and "cancel it first" in early.stderr
    assert sharpness("jobs", "cancel", job_id, url=service_url).returncode == 0
    # once nothing active uses the dataset, it deletes without --force
    assert sharpness("datasets", "delete", data["id"], url=service_url).returncode == 0
    assert httpx.get(f"{service_url}/v1/datasets/{data['id']}").status_code == 404

    deleted = sharpness("jobs", "delete", job_id, "--json", url=service_url)
    assert _json(deleted) == {"id": job_id, "deleted": True}
    assert httpx.get(f"{service_url}/v1/jobs/{job_id}").status_code == 404
    gone = sharpness("jobs", "show", job_id, url=service_url)
    assert gone.returncode == cli.EXIT_API and f"no job {job_id}" in gone.stderr


def test_bad_ids_are_named_in_words(service_url: str) -> None:
    shown = sharpness("jobs", "show", "not-an-id", url=service_url)
    assert shown.returncode == cli.EXIT_API
    assert "'not-an-id' is not a job id (32 hex characters)" in shown.stderr
    assert "^[0-9a-f]" not in shown.stderr and "pattern" not in shown.stderr
    model = sharpness("models", "delete", "abc", url=service_url)
    assert "'abc' is not a model id (64 hex characters" in model.stderr
    for path, noun, width in (
        ("/v1/trajectories/xyz", "trajectory", 32),
        ("/v1/studies/xyz", "study", 32),
        ("/v1/datasets/xyz", "dataset", 64),
        ("/v1/jobs/xyz/cancel", "job", 32),
    ):
        method = "POST" if path.endswith("cancel") else "GET"
        r = httpx.request(method, f"{service_url}{path}", timeout=30)
        assert r.status_code == 422, r.text
        assert f"'xyz' is not a {noun} id ({width} hex characters" in r.json()["detail"]


def test_version_help_and_completion(service_url: str, tmp_path: Path) -> None:
    version = subprocess.run([SCRIPT, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and version.stdout.strip().startswith(f"sharpness {__version__}")
    top = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, check=False).stdout
    for command in ("models", "datasets", "completion"):
        assert re.search(rf"^\s+{command}\s", top, re.M), top
    jobs = subprocess.run([SCRIPT, "jobs", "--help"], capture_output=True, text=True).stdout
    assert "delete" in jobs
    commands = {
        "models": "{list,show,upload,register,delete}",
        "datasets": "{list,show,upload,delete}",
    }
    for noun, choices in commands.items():
        usage = subprocess.run([SCRIPT, noun, "--help"], capture_output=True, text=True).stdout
        assert choices in usage, usage

    script = subprocess.run([SCRIPT, "completion", "bash"], capture_output=True, text=True)
    assert script.returncode == 0 and "complete " in script.stdout and "sharpness" in script.stdout

    def complete(line: str) -> list[str]:
        """What the shell gets back when it asks for completions of `line` (argcomplete)."""
        answer = tmp_path / "completions"
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
        }
        proc = subprocess.run([SCRIPT], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return answer.read_text().split("\n")

    assert {"models", "datasets", "measure"} <= {w.strip() for w in complete("sharpness ")}
    assert {w.strip() for w in complete("sharpness models ")} >= {
        "list",
        "show",
        "upload",
        "delete",
    }
    assert "--force" in {w.strip() for w in complete("sharpness datasets delete --f")}


def test_unreachable_hint_names_the_url_make_run_wrote(service_url: str, tmp_path: Path) -> None:
    """`make run` writes its URL to {data dir}/gateway.url; a CLI pointed elsewhere names it."""
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "gateway.url").write_text(service_url + "\n")
    (tmp_path / "sub").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    proc = subprocess.run(
        [SCRIPT, "queue"],
        cwd=tmp_path / "sub",  # the file is found from a folder below too
        env={**env, "SHARPNESS_URL": dead},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == cli.EXIT_CONNECT
    assert f"{dead} (from SHARPNESS_URL)" in proc.stderr
    assert f"listens on {service_url}" in proc.stderr and "gateway.url" in proc.stderr
    assert f"SHARPNESS_URL={service_url}" in proc.stderr
    assert "sharpness: service" not in proc.stderr  # nothing answered

    bare = tmp_path / "bare"
    bare.mkdir()
    proc = subprocess.run(
        [SCRIPT, "queue"], cwd=bare, env={**env, "SHARPNESS_URL": dead, "SHARPNESS_DATA_DIR":
        str(bare)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == cli.EXIT_CONNECT
    assert "make run" in proc.stderr and "var/gateway.url" in proc.stderr


def test_api_docs_load_nothing_from_outside(service_url: str) -> None:
    """/docs and /redoc, and every script they load, name no remote URL to load (ReDoc's
    footer logo included), fetched from the running gateway."""
    for page in ("/docs", "/redoc"):
        r = httpx.get(f"{service_url}{page}", timeout=30)
        assert r.status_code == 200
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I), page
        for ref in re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text):
            assert ref.startswith("/"), ref
            asset = httpx.get(f"{service_url}{ref}", timeout=30)
            assert asset.status_code == 200, ref
            if ref.endswith(".js"):
                assert not re.search(r"\bsrc\s*[:=]\s*[\"'`](https?:)?//", asset.text), ref
                assert "cdn.redoc.ly" not in asset.text


def test_models_list_pages(service_url: str, tmp_path: Path) -> None:
    ids = []
    for seed in range(3):
        x, y = M.data(n=4, seed=1000 + seed)
        path = tmp_path / f"d{seed}.npz"
        path.write_bytes(arrays_to_npz(x, y))
        ids.append(
            _json(sharpness("datasets", "upload", str(path), "--json", url=service_url))["id"]
        )
    first = httpx.get(f"{service_url}/v1/datasets", params={"limit": 1}, timeout=30).json()
    assert len(first["items"]) == 1 and first["next_cursor"] == first["items"][0]["id"]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{service_url}/v1/datasets", params=params, timeout=30).json()
        seen += [d["id"] for d in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    bad = httpx.get(f"{service_url}/v1/datasets", params={"cursor": "0" * 64}, timeout=30)
    assert bad.status_code == 422 and "query.cursor" in bad.text
