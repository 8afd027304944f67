"""Hugging Face models measured end to end through the real service (gateway, Redis and a
worker process): BERT with input_ids and attention_mask from a save_pretrained folder and as
a .pt2 from the SDK's export helper, GPT-2 as a language model from a live transformers
object. λmax is compared with an independent
float64 reference: scipy's eigsh on Hessian-vector products of a float64 copy of the model
(eager attention), the loss a mean over every counted target of the whole dataset."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sharpness_client import Client, JobStatus
from sharpness_client.types import DatasetRef
from tests import hf_checkpoints as H

pytestmark = pytest.mark.integration
pytest.importorskip("transformers")
eigsh = pytest.importorskip("scipy.sparse.linalg").eigsh
LinearOperator = pytest.importorskip("scipy.sparse.linalg").LinearOperator

N, T = 12, 10
RTOL = 5e-5  # float32 attention in the service against the float64 reference


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _reference_lambda_max(model: nn.Module, loss_of) -> float:
    """Largest Hessian eigenvalue of loss_of(m) for a float64 copy, by eigsh on exact HVPs."""
    import copy

    m = copy.deepcopy(model).double().eval()
    m.config._attn_implementation = "eager"
    params = list(m.parameters())  # each tied storage once
    dim = sum(p.numel() for p in params)
    grads = torch.autograd.grad(loss_of(m), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])

    def matvec(v: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(np.ascontiguousarray(v.reshape(-1)))
        out = torch.autograd.grad(flat @ vt, params, retain_graph=True)
        return torch.cat([o.reshape(-1) for o in out]).numpy()

    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    return float(eigsh(op, k=1, which="LA", tol=1e-10, v0=np.ones(dim))[0][0])


def _measure(client: Client, model_id: str, data: bytes, inputs_key, targets_key: str):
    dataset = client.datasets.upload(data, filename="tokens.npz")
    ref = DatasetRef(
        id=dataset.id, inputs_key=inputs_key, targets_key=targets_key, batch_size=5
    )  # 12 examples in batches of 5 + 5 + 2
    job = client.jobs.create(
        model=model_id,
        dataset=ref,
        measures=["lambda_max"],
        params={"lambda_max": {"tol": 1e-5}},  # float32 attention: HVP rounding near 1e-6
        device="cpu",
    )
    return client.jobs.wait(job.id, timeout=300, poll_interval=0.3)


def _check_bert(
    client: Client,
    model_id: str,
    model: nn.Module,
    ids: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Measure λmax of a BERT classifier over token ids and an attention mask and compare it
    with the float64 reference on the same loss."""
    job = _measure(
        client,
        model_id,
        _npz(input_ids=ids, attention_mask=mask, labels=labels),
        {"input_ids": "input_ids", "attention_mask": "attention_mask"},
        "labels",
    )
    assert job.status == JobStatus.succeeded, job.error
    assert job.results["lambda_max"].converged is True

    x, am, y = (torch.from_numpy(a) for a in (ids, mask, labels))

    def loss_of(m: nn.Module) -> torch.Tensor:
        return nn.functional.cross_entropy(m(input_ids=x, attention_mask=am).logits, y)

    exact = _reference_lambda_max(model, loss_of)
    got = job.value("lambda_max")
    print(f"lambda_max service {got:.9g} reference {exact:.9g} rel {abs(got - exact) / exact:.2e}")
    assert abs(got - exact) <= RTOL * abs(exact), (got, exact)


def test_bert_folder_with_attention_mask(service_url: str, tmp_path: Path) -> None:
    model = H.bert_seq(seed=31)
    folder = H.save(model, tmp_path / "bert")
    rng = np.random.default_rng(31)
    ids = rng.integers(1, H.VOCAB, (N, T)).astype(np.int64)
    mask = np.ones((N, T), np.int64)
    for i in range(N):
        mask[i, T - int(rng.integers(0, 4)) :] = 0  # right padding of varying length
    labels = rng.integers(0, 3, N).astype(np.int64)

    with Client() as client:
        info = client.models.upload(folder)
        assert info.format == "huggingface" and info.head == "sequence_classification"
        assert client.models.upload(folder).id == info.id  # the same folder, the same id
        _check_bert(client, info.id, model, ids, mask, labels)


def test_bert_exported_by_the_sdk_helper(service_url: str) -> None:
    """The same kind of model through torch.export: keyword inputs, int64 token ids, a
    ModelOutput, dynamic batch (the last batch holds 2) and the attention in math form."""
    model = H.bert_seq(seed=33)
    rng = np.random.default_rng(33)
    ids = rng.integers(1, H.VOCAB, (N, T)).astype(np.int64)
    mask = np.ones((N, T), np.int64)
    mask[::3, T - 3 :] = 0
    labels = rng.integers(0, 3, N).astype(np.int64)

    with Client() as client:
        info = client.models.from_module(model, {"input_ids": ids[:4], "attention_mask": mask[:4]})
        assert info.format == "torch_export"
        _check_bert(client, info.id, model, ids, mask, labels)


def test_gpt2_language_model_from_a_live_object(service_url: str) -> None:
    model = H.gpt2_lm(seed=32)
    rng = np.random.default_rng(32)
    tokens = rng.integers(0, H.VOCAB, (N, T + 1)).astype(np.int64)
    ids, targets = tokens[:, :-1].copy(), tokens[:, 1:].copy()  # next-token targets
    for i in range(N):
        targets[i, T - int(rng.integers(0, 5)) :] = -100  # ignored positions, varying count

    with Client() as client:
        info = client.models.from_pretrained(model)
        assert info.format == "huggingface" and info.head == "causal_lm"
        job = _measure(client, info.id, _npz(input_ids=ids, labels=targets), "input_ids", "labels")
    assert job.status == JobStatus.succeeded, job.error
    assert job.results["lambda_max"].converged is True

    x, y = torch.from_numpy(ids), torch.from_numpy(targets)

    def loss_of(m: nn.Module) -> torch.Tensor:  # mean over every counted target
        logits = m(input_ids=x, use_cache=False).logits
        return nn.functional.cross_entropy(logits.reshape(-1, H.VOCAB), y.reshape(-1))

    exact = _reference_lambda_max(model, loss_of)
    got = job.value("lambda_max")
    print(f"lambda_max service {got:.9g} reference {exact:.9g} rel {abs(got - exact) / exact:.2e}")
    assert abs(got - exact) <= RTOL * abs(exact), (got, exact)


def test_cli_measures_a_folder_with_a_declared_head(service_url: str, tmp_path: Path) -> None:
    """`sharpness measure FOLDER --head masked_lm`: a masked-LM checkpoint whose config names
    the base model only, with -100 on every position that is not masked."""
    import json

    from tests.sdk.test_e2e_cli import sharpness

    folder = H.save(H.build("BertForMaskedLM", H.bert_config(), seed=34), tmp_path / "mlm")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["BertModel"]}))
    rng = np.random.default_rng(34)
    ids = rng.integers(1, H.VOCAB, (N, T)).astype(np.int64)
    labels = np.full((N, T), -100, np.int64)
    masked = rng.random((N, T)) < 0.3
    labels[masked] = ids[masked]
    data = tmp_path / "tokens.npz"
    data.write_bytes(_npz(input_ids=ids, labels=labels))

    args = ["measure", str(folder), "--data", str(data), "--measure", "lambda_max"]
    refused = sharpness(*args, "--device", "cpu", "--json", url=service_url)
    assert refused.returncode == 3 and "head" in refused.stderr  # BertModel names no head
    proc = sharpness(
        *args, "--head", "masked_lm", "--param", "lambda_max.tol=1e-4", "--device", "cpu",
        "--timeout", "240", "--json", url=service_url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["status"] == "succeeded" and job["results"]["lambda_max"]["value"] > 0
    with Client() as client:
        info = client.models.get(job["spec"]["model"])
    assert info.format == "huggingface" and info.head == "masked_lm"
