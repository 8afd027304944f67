"""Optimizer-aware trajectories end to end: real gateway, Redis and worker, over the SDK and CLI.

An Adam run of a float64 MLP: each checkpoint's optimizer state uploaded by the SDK straight
from torch.optim.Adam, the worker's λmax(P⁻¹H) against a dense P^{−1/2}HP^{−1/2}; a momentum
run through the CLI, whose ratios are λmax·η/(2(1+β)).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sharpness_client import Client, cli
from tasks.engine.problem import HessianProblem
from tests import artifacts as A
from tests.checkpoints import sgd_checkpoints
from tests.engine.reference import dense_hessian
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BETAS, EPS, LR = (0.9, 0.99), 1e-6, 0.02


def test_adam_trajectory_through_the_sdk(stack: Stack, tmp_path: Path) -> None:
    x, y = A.data(n=48, dtype=np.float64)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = A.mlp(4, 6, 3, seed=3).double()
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    checkpoints, exact, step = [], [], 0
    with Client(stack.url) as client:
        for target in (2, 10, 25):
            while step < target:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt), yt).backward()
                opt.step()
                step += 1
            path = A.export(copy.deepcopy(model), tmp_path / f"m{step}.pt2", 4, torch.float64)
            state = client.trajectories.upload_optimizer_state(optimizer=opt, model=model)
            assert "0.weight" in state.parameters
            checkpoints.append(
                {
                    "model": stack.upload_id("models", path),
                    "learning_rate": LR,
                    "step": step,
                    "optimizer_state": state.id,
                }
            )
            v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()])
            P = (1 - BETAS[0] ** step) * ((v / (1 - BETAS[1] ** step)).sqrt() + EPS)
            H = dense_hessian(HessianProblem(copy.deepcopy(model), [(xt, yt)]))
            M = H / P.sqrt()[:, None] / P.sqrt()[None, :]
            exact.append(float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1]))
        t = client.trajectories.create(
            checkpoints=checkpoints,
            dataset=data_id,
            batch_size=48,
            k=2,
            tol=1e-9,
            optimizer={"name": "adam", "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS},
        )
        t = client.trajectories.wait(t.id, timeout=120, poll_interval=0.2)
    assert t.status == "succeeded", t.error
    threshold = (2 + 2 * BETAS[0]) / ((1 - BETAS[0]) * LR)
    for p, want in zip(t.points, exact, strict=True):
        assert p.optimizer == "adam" and p.stability_quantity == "preconditioned_lambda_max"
        assert p.preconditioned_lambda_max == pytest.approx(want, rel=1e-6)
        assert p.stability_ratio == pytest.approx(want / threshold, rel=1e-6)
        assert p.mode == "eval" and p.mode_reason
    assert t.edge_analysis["below_edge"]["pairs"] + t.edge_analysis["beyond_edge"]["pairs"] == 2


def test_momentum_trajectory_through_the_cli(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("SHARPNESS_URL", stack.url)
    x, y = A.data(n=40, dtype=np.float64)
    models = sgd_checkpoints(
        A.mlp(4, 6, 3, seed=4).double(), torch.from_numpy(x), torch.from_numpy(y), 0.5, [0, 5]
    )
    paths = [A.export(m, tmp_path / f"c{i}.pt2", 4, torch.float64) for i, m in enumerate(models)]
    data = A.save_npz(tmp_path / "d.npz", x, y)
    args = ["trajectory", "create", "--data", str(data), "--k", "1", "--tol", "1e-9"]
    args += [a for p in paths for a in ("--checkpoint", f"{p}:0.1")]
    args += ["--optimizer", "sgd", "--momentum", "0.9", "--timeout", "120", "--json"]
    assert cli.main(args) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["spec"]["optimizer"]["momentum"] == 0.9
    for p in t["points"]:
        assert p["stability_ratio"] == pytest.approx(p["lambda_max"] * 0.1 / (2 * 1.9))
    assert cli.main(["trajectory", "show", t["id"]]) == 0
    shown = capsys.readouterr().out
    assert "optimizer sgd" in shown and "mode: eval" in shown
