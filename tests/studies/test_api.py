"""/v1/studies and the prediction on /v1/jobs, through the real app on a private Redis.

Finished jobs are written straight into the job store (as a worker leaves them); what is
under test is the study: gaps, statistics, verdict, predictions, errors."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tasks.contract.spec import JobStatus
from tests.api.checks import assert_problem
from tests.studies.conftest import Jobs

LRS = [0.1, 0.05, 0.02, 0.01, 0.005]
BSS = [32, 128]


def _sweep(
    jobs: Jobs, measure, seed: int = 0, noise: float = 0.01, repeats: int = 1
) -> list[dict[str, Any]]:
    """Ten models (times `repeats`): the gap grows as the learning rate falls (plus noise);
    `measure(gap, rng)` gives each job's measure values. Train accuracy from the job, test
    accuracy given."""
    rng = np.random.default_rng(seed)
    members = []
    for lr, bs, _ in itertools.product(LRS, BSS, range(repeats)):
        gap = 0.004 / lr + 0.002 * (bs == 128) + rng.normal(scale=noise)
        gap = float(np.clip(gap, -0.009, 0.98))  # a test accuracy in [0.01, 0.999]
        train = 0.99
        job = jobs.add(measure(gap, rng), evaluation={"accuracy": train, "loss": 0.05})
        members.append(
            {
                "job": job,
                "hyperparameters": {"learning_rate": lr, "batch_size": bs},
                "test_accuracy": train - gap,
            }
        )
    return members


def _noise(gap: float, rng: np.random.Generator) -> dict[str, float]:
    return {"lambda_max": float(np.exp(rng.normal())), "trace": float(rng.normal())}


def _tracks_gap(gap: float, rng: np.random.Generator) -> dict[str, float]:
    return {"lambda_max": 100 * gap + rng.normal(scale=0.01), "trace": float(rng.normal())}


def test_noise_measures_lose_to_the_baselines_in_plain_words(
    client: TestClient, jobs: Jobs
) -> None:
    members = _sweep(jobs, _noise)
    r = client.post("/v1/studies", json={"name": "lr sweep", "jobs": members})
    assert r.status_code == 201, r.text
    study = r.json()
    assert r.headers["location"] == f"/v1/studies/{study['id']}"
    assert study["status"] == "ready" and study["target"] == "accuracy_gap"
    a = study["analysis"]
    assert a["n_models"] == 10
    assert a["hyperparameters"] == ["batch_size", "learning_rate"]
    assert {m["name"] for m in a["measures"]} == {"lambda_max", "trace"}
    baselines = {b["name"]: b for b in a["baselines"]}
    assert set(baselines) == {"1/learning_rate", "learning_rate/batch_size"}  # no weight_norms
    assert baselines["1/learning_rate"]["kendall_tau"] > 0.6
    assert baselines["1/learning_rate"]["granulated"]["per_hyperparameter"]["batch_size"] == {
        "tau": 0.0,  # 1/lr is constant where only the batch size varies
        "groups": 5,
    }
    assert baselines["1/learning_rate"]["cmi"]["value"] == 0.0  # nothing beyond lr itself
    beats = a["beats_baselines"]
    assert (beats["beats"], beats["by_tau"], beats["by_loo"]) == (False, False, False)
    assert a["verdict"].startswith("No measure beats the trivial baselines in this study")
    assert "do not use them to choose between these models" in a["verdict"]
    assert a["predictor"]["loo"]["mae"] > a["baseline_predictor"]["loo"]["mae"]
    assert a["constant_predictor"]["n"] == 10
    for m in study["members"]:
        assert m["state"] == "observed"
        assert abs(m["gap"] - (0.99 - m["test_accuracy"])) < 1e-12
        p = m["prediction"]
        assert p["kind"] == "leave_one_out" and p["level"] == 0.9
        assert p["interval"][0] <= p["gap"] <= p["interval"][1]
    assert client.get(f"/v1/studies/{study['id']}").json() == study


def test_a_measure_that_tracks_the_gap_beats_the_baselines(client: TestClient, jobs: Jobs) -> None:
    # the gaps vary beyond what the learning rate explains, and the measure sees it
    members = _sweep(jobs, _tracks_gap, seed=1, noise=0.1, repeats=2)
    study = client.post("/v1/studies", json={"name": "good", "jobs": members}).json()
    a = study["analysis"]
    assert a["best_measure"] == "lambda_max"
    assert a["measures"][0]["name"] == "lambda_max" and a["measures"][0]["kendall_tau"] > 0.9
    beats = a["beats_baselines"]
    assert (beats["beats"], beats["by_tau"], beats["by_loo"]) == (True, True, True)
    assert beats["measure"] == "lambda_max" and beats["p_value"] <= 0.05
    assert beats["vs_constant"]["difference"] > beats["vs_constant"]["se"]
    assert a["verdict"].startswith("A measure beats the trivial baselines in this study.")
    assert a["predictor"]["chosen"] == ["lambda_max"]
    assert a["predictor"]["loo"]["mae"] < 0.5 * a["constant_predictor"]["mae"]


def test_calibrated_prediction_on_member_jobs(client: TestClient, jobs: Jobs) -> None:
    members = _sweep(jobs, _tracks_gap, seed=2)
    rng = np.random.default_rng(9)
    new_job = jobs.add(_tracks_gap(0.3, rng), evaluation={"accuracy": 0.99, "loss": 0.05})
    running = jobs.add({"lambda_max": 1.0}, status=JobStatus.running)
    members += [
        {"job": new_job, "hyperparameters": {"learning_rate": 0.015, "batch_size": 64}},
        {"job": running, "hyperparameters": {"learning_rate": 0.03, "batch_size": 64}},
    ]
    study = client.post("/v1/studies", json={"name": "s", "jobs": members, "level": 0.8}).json()
    states = {m["job"]: m for m in study["members"]}
    assert states[new_job]["state"] == "to_predict"
    assert states[running]["state"] == "waiting" and states[running]["prediction"] is None
    assert "1 jobs still queued or running" in study["message"]

    pred = client.get(f"/v1/jobs/{new_job}").json()["prediction"]
    assert pred["calibrated"] is True and pred["study"] == study["id"]
    assert pred["best_measure"] == "lambda_max" and pred["level"] == 0.8
    assert abs(pred["gap"] - 0.3) < 0.05  # lambda_max = 100 · gap, the fit recovers it
    assert pred["interval"][0] < pred["gap"] < pred["interval"][1]
    assert "lambda_max" in pred["basis"] and "10 models" in pred["basis"]
    assert pred["gap"] == states[new_job]["prediction"]["gap"]
    assert pred["selection"] == "only_study" and "the only study this job is in" in pred["basis"]
    assert [p["study"] for p in pred["studies"]] == [study["id"]]
    assert pred["studies"][0]["gap"] == pred["gap"] and pred["studies"][0]["name"] == "s"

    observed = members[0]["job"]
    pred = client.get(f"/v1/jobs/{observed}").json()["prediction"]
    assert pred["calibrated"] is True
    assert "leave-one-out" in pred["basis"]
    assert pred["gap"] == states[observed]["prediction"]["gap"]

    pred = client.get(f"/v1/jobs/{running}").json()["prediction"]
    assert pred["calibrated"] is False and "once the job has succeeded" in pred["basis"]

    listed = {j["id"]: j for j in client.get("/v1/jobs", params={"limit": 200}).json()["items"]}
    assert listed[new_job]["prediction"]["gap"] == states[new_job]["prediction"]["gap"]


def test_job_outside_any_study_is_not_calibrated(client: TestClient, jobs: Jobs) -> None:
    evaluation = {
        "accuracy": 0.98,
        "loss": 0.06,
        "test": {"accuracy": 0.91, "loss": 0.3},
        "gap": {"accuracy": 0.07, "loss": 0.24},
    }
    job = jobs.add({"lambda_max": 3.0, "pacbayes_bound": 0.42}, evaluation=evaluation)
    pred = client.get(f"/v1/jobs/{job}").json()["prediction"]
    assert pred["calibrated"] is False
    assert pred["gap"] is None and pred["interval"] is None and pred["study"] is None
    assert "in no study" in pred["basis"] and "POST /v1/studies" in pred["basis"]
    assert pred["selection"] == "no_study" and pred["studies"] == []
    assert pred["measured_gap"] == 0.07
    assert pred["bound"]["value"] == 0.42 and "not a prediction" in pred["bound"]["note"]


def test_gaps_from_eval_datasets_and_the_loss_target(client: TestClient, jobs: Jobs) -> None:
    members = []
    for i, lr in enumerate([0.1, 0.05, 0.02, 0.01]):
        ev = {"accuracy": 0.99, "loss": 0.1, "gap": {"accuracy": 0.01 * i, "loss": 0.1 * i}}
        job = jobs.add({"lambda_max": float(i)}, evaluation=ev)
        members.append({"job": job, "hyperparameters": {"learning_rate": lr}})
    body = {"name": "loss", "jobs": members, "target": "loss_gap"}
    study = client.post("/v1/studies", json=body).json()
    assert study["status"] == "ready"
    assert [m["gap"] for m in study["members"]] == [0.0, 0.1, 0.2, 0.30000000000000004]
    assert {m["gap_source"] for m in study["members"]} == {"measured on the job's eval_dataset"}
    a = study["analysis"]
    assert a["measures"][0]["kendall_tau"] == 1.0
    # 4 models: a 0.9 interval needs 9 residuals; a loss gap has no natural range to show
    p = study["members"][0]["prediction"]
    assert p["interval"] is None and "needs at least 9" in p["note"]
    assert "Only 4 models" in a["verdict"]
    # test_loss given wins over the measured gap: 0.5 − 0.1
    members[0]["test_loss"] = 0.5
    study = client.post("/v1/studies", json=body | {"jobs": members}).json()
    assert abs(study["members"][0]["gap"] - 0.4) < 1e-12


def test_waiting_and_insufficient(client: TestClient, jobs: Jobs) -> None:
    ev = {"accuracy": 0.9}
    done = [jobs.add({"lambda_max": 1.0 + i}, evaluation=ev) for i in range(2)]
    queued = jobs.add({"lambda_max": 1.0}, status=JobStatus.queued)
    failed = jobs.add({"lambda_max": 1.0}, status=JobStatus.failed)
    members = [{"job": j, "test_accuracy": 0.8} for j in done]
    body = {"name": "w", "jobs": members + [{"job": queued}, {"job": failed}]}
    study = client.post("/v1/studies", json=body).json()
    assert study["status"] == "waiting" and study["analysis"] is None
    assert study["message"].startswith("Waiting: 2 of the 4 models with a gap")
    assert [m["state"] for m in study["members"]] == ["observed", "observed", "waiting", "failed"]
    pred = client.get(f"/v1/jobs/{done[0]}").json()["prediction"]
    assert pred["calibrated"] is False and study["id"] in pred["basis"]

    study = client.post("/v1/studies", json={"name": "i", "jobs": members}).json()
    assert study["status"] == "insufficient"
    assert "create a study with more models" in study["message"]


def test_list_read_delete(client: TestClient, jobs: Jobs) -> None:
    job = jobs.add({"lambda_max": 1.0}, evaluation={"accuracy": 0.9})
    ids = [
        client.post("/v1/studies", json={"name": f"s{i}", "jobs": [{"job": job}]}).json()["id"]
        for i in range(3)
    ]
    page = client.get("/v1/studies", params={"limit": 2}).json()
    assert [s["id"] for s in page["items"]] == ids[::-1][:2]
    assert page["items"][0]["jobs"] == 1 and page["next_cursor"] == ids[1]
    rest = client.get("/v1/studies", params={"cursor": page["next_cursor"]}).json()
    assert [s["id"] for s in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    assert client.delete(f"/v1/studies/{ids[2]}").status_code == 204
    assert_problem(client.get(f"/v1/studies/{ids[2]}"), 404, f"no study {ids[2]}")
    assert_problem(client.delete(f"/v1/studies/{ids[2]}"), 404, "id:")
    assert_problem(client.get("/v1/studies", params={"cursor": "f" * 32}), 422, "query.cursor")
    # the job's reverse index forgot the deleted study but keeps the others
    basis = client.get(f"/v1/jobs/{job}").json()["prediction"]["basis"]
    assert ids[2] not in basis and ids[1] in basis


def test_errors_name_the_field(client: TestClient, jobs: Jobs) -> None:
    job = jobs.add({"lambda_max": 1.0})
    ghost = "0" * 32
    body = {"name": "e", "jobs": [{"job": job}, {"job": job}, {"job": ghost}]}
    problem = assert_problem(
        client.post("/v1/studies", json=body), 422, "jobs.1.job", "jobs.2.job", f"no job {ghost}"
    )
    assert [e["field"] for e in problem["errors"]] == ["jobs.1.job", "jobs.2.job"]
    assert_problem(
        client.post("/v1/studies", json={"name": "e", "jobs": [{"job": "nope"}]}), 422, "jobs.0.job"
    )
    bad_level = {"name": "e", "jobs": [{"job": job}], "level": 1.5}
    assert_problem(client.post("/v1/studies", json=bad_level), 422, "level")
    bad_hp = {"name": "e", "jobs": [{"job": job, "hyperparameters": {"lr": [1]}}]}
    assert_problem(client.post("/v1/studies", json=bad_hp), 422, "jobs.0.hyperparameters.lr")
    bad_acc = {"name": "e", "jobs": [{"job": job, "test_accuracy": 91}]}
    assert_problem(client.post("/v1/studies", json=bad_acc), 422, "jobs.0.test_accuracy")
    assert_problem(client.post("/v1/studies", json={"name": "e", "jobs": []}), 422, "jobs")
    assert_problem(client.get("/v1/studies/xyz"), 422, "id")


def test_plot(client: TestClient, jobs: Jobs) -> None:
    members = _sweep(jobs, _tracks_gap, seed=3)
    sid = client.post("/v1/studies", json={"name": "p", "jobs": members}).json()["id"]
    r = client.get(
        f"/v1/studies/{sid}/plot.png",
        params={"measure": "lambda_max", "baseline": "1/learning_rate"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert_problem(
        client.get(f"/v1/studies/{sid}/plot.png", params={"measure": "nope"}),
        422,
        "query.measure",
        "lambda_max",
    )
    lonely = client.post("/v1/studies", json={"name": "l", "jobs": members[:2]}).json()["id"]
    assert_problem(
        client.get(f"/v1/studies/{lonely}/plot.png", params={"measure": "lambda_max"}), 409
    )


def test_idempotent_create(client: TestClient, jobs: Jobs) -> None:
    job = jobs.add({"lambda_max": 1.0})
    body = {"name": "once", "jobs": [{"job": job}]}
    headers = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/studies", json=body, headers=headers)
    again = client.post("/v1/studies", json=body, headers=headers)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/studies").json()["items"]) == 1
    other = client.post("/v1/studies", json=body | {"name": "twice"}, headers=headers)
    assert_problem(other, 409, "Idempotency-Key")


def test_duplicates_groups_and_test_set_noise_through_the_api(
    client: TestClient, jobs: Jobs
) -> None:
    """Two jobs on one uploaded model are one model; a declared group is held out together;
    the gap's noise comes from the eval set's size; gaps within it are said to be."""
    rng = np.random.default_rng(6)
    members = []
    for i, lr in enumerate(LRS * 2):
        acc = rng.binomial(100, 0.9) / 100  # one true accuracy, 100 test examples
        ev = {
            "accuracy": 0.99,
            "test": {"accuracy": acc, "num_examples": 100},
            "gap": {"accuracy": 0.99 - acc},
        }
        job = jobs.add({"lambda_max": float(rng.normal())}, evaluation=ev, model=f"{i:064x}")
        members.append({"job": job, "hyperparameters": {"learning_rate": lr}, "group": f"lr={lr}"})
    twin = jobs.add({"lambda_max": 1.0}, evaluation={"accuracy": 0.99}, model=f"{0:064x}")
    members.append({"job": twin, "hyperparameters": {"learning_rate": LRS[0]}})
    study = client.post("/v1/studies", json={"name": "noisy", "jobs": members}).json()
    a = study["analysis"]
    assert a["n_models"] == 10 and a["n_members"] == 11
    assert a["duplicates"] == [[members[0]["job"], twin]] and a["groups"] == 5
    by_job = {m["job"]: m for m in study["members"]}
    assert by_job[twin]["model"] == f"{0:064x}" and by_job[members[1]["job"]]["group"] == "lr=0.05"
    assert by_job[twin]["prediction"] == by_job[members[0]["job"]]["prediction"]
    assert by_job[members[0]["job"]]["gap_noise"] > 0.02  # √(0.9·0.1/100) ≈ 0.03
    assert a["noise_floor"]["within"] is True and a["noise_floor"]["max_test_examples"] == 100
    assert "within the noise of the test sets" in a["verdict"]
    assert a["beats_baselines"]["beats"] is False
    bad = {"name": "g", "jobs": [{"job": twin, "group": ""}]}
    assert_problem(client.post("/v1/studies", json=bad), 422, "jobs.0.group")


def test_no_calibrated_prediction_outside_the_range_or_from_a_loser(
    client: TestClient, jobs: Jobs
) -> None:
    members = _sweep(jobs, _tracks_gap, seed=4)
    far = jobs.add({"lambda_max": 5000.0, "trace": 0.0}, evaluation={"accuracy": 0.99})
    members.append({"job": far, "hyperparameters": {"learning_rate": 0.02, "batch_size": 64}})
    study = client.post("/v1/studies", json={"name": "far", "jobs": members}).json()
    member = next(m for m in study["members"] if m["job"] == far)
    assert member["prediction"]["extrapolation"] is True
    assert member["prediction"]["outside_range"]["lambda_max"][1] < 100
    pred = client.get(f"/v1/jobs/{far}").json()["prediction"]
    assert pred["calibrated"] is False and pred["gap"] is None
    assert "outside the study's range" in pred["basis"] and "lambda_max" in pred["basis"]

    for seed in range(10, 40):  # pure noise until the predictor loses to the mean gap
        members = _sweep(jobs, _noise, seed=seed, noise=0.3)
        study = client.post("/v1/studies", json={"name": "noise", "jobs": members}).json()
        if study["analysis"]["predictor_beats_mean_gap"] is False:
            break
    else:
        pytest.fail("no pure-noise sweep whose predictor lost to the mean gap")
    pred = client.get(f"/v1/jobs/{members[0]['job']}").json()["prediction"]
    assert pred["calibrated"] is False and pred["gap"] is None
    assert "not significantly more accurate than predicting the mean gap" in pred["basis"]
    assert study["analysis"]["predictor_vs_mean_gap"]["p"] > 0.05
    assert all(m["prediction"]["calibrated"] is False for m in study["members"])


def test_a_job_in_several_studies_is_never_silently_given_one(
    client: TestClient, jobs: Jobs
) -> None:
    """Two studies share a job: without ?study= the job shows both predictions and no single
    gap; ?study= reads one; the newest study does not win by being newest."""
    members = _sweep(jobs, _tracks_gap, seed=6)
    first = client.post("/v1/studies", json={"name": "real", "jobs": members}).json()
    # a second study of the same jobs with made-up test accuracies (a synthetic study)
    fake = [m | {"test_accuracy": 0.5} for m in members[:4]]
    second = client.post("/v1/studies", json={"name": "synthetic", "jobs": fake}).json()
    job = members[0]["job"]

    pred = client.get(f"/v1/jobs/{job}").json()["prediction"]
    assert pred["selection"] == "several_studies"
    assert pred["calibrated"] is False and pred["gap"] is None and pred["study"] is None
    assert [p["study"] for p in pred["studies"]] == [second["id"], first["id"]]  # newest first
    assert "in 2 studies" in pred["basis"] and "?study=" in pred["basis"]
    by_id = {p["study"]: p for p in pred["studies"]}
    assert by_id[first["id"]]["calibrated"] is True and by_id[first["id"]]["name"] == "real"
    own = next(m for m in first["members"] if m["job"] == job)["prediction"]
    assert by_id[first["id"]]["gap"] == own["gap"]

    for chosen in (first, second):
        r = client.get(f"/v1/jobs/{job}", params={"study": chosen["id"]})
        assert r.status_code == 200, r.text
        pred = r.json()["prediction"]
        assert pred["selection"] == "requested" and pred["study"] == chosen["id"]
        assert [p["study"] for p in pred["studies"]] == [chosen["id"]]
        assert "the study named by ?study=" in pred["basis"]
    pred = client.get(f"/v1/jobs/{job}", params={"study": first["id"]}).json()["prediction"]
    assert pred["calibrated"] is True and pred["gap"] == own["gap"]

    # a job in only the first study still reads it without naming it
    only = members[-1]["job"]
    pred = client.get(f"/v1/jobs/{only}").json()["prediction"]
    assert pred["selection"] == "only_study" and pred["study"] == first["id"]
    assert pred["calibrated"] is True

    # the list shows the same thing as the read
    listed = {j["id"]: j for j in client.get("/v1/jobs", params={"limit": 200}).json()["items"]}
    assert listed[job]["prediction"]["selection"] == "several_studies"


def test_an_unknown_or_foreign_study_is_a_problem_naming_the_field(
    client: TestClient, jobs: Jobs
) -> None:
    members = _sweep(jobs, _tracks_gap, seed=7)
    study = client.post("/v1/studies", json={"name": "a", "jobs": members[:5]}).json()
    inside, outside = members[0]["job"], members[-1]["job"]

    body = assert_problem(
        client.get(f"/v1/jobs/{inside}", params={"study": "f" * 32}),
        422,
        "query.study",
        "no study " + "f" * 32,
        study["id"],  # the job's own studies are named
        "GET /v1/studies",
    )
    assert body["errors"][0]["field"] == "query.study"

    body = assert_problem(
        client.get(f"/v1/jobs/{outside}", params={"study": study["id"]}),
        422,
        "query.study",
        f"job {outside} is not a member of study {study['id']}",
        "leave study= out",
    )
    assert body["errors"][0]["field"] == "query.study"
    assert_problem(client.get("/v1/jobs/" + "0" * 32, params={"study": study["id"]}), 404, "id")
