"""A new user's Hugging Face folders measured exactly through the real service, from the SDK
and the CLI, with no key arguments: sequence classification with `label`, image
classification with `pixel_values`, T5 and BART seq2seq with decoder inputs and -100-padded
labels (and without decoder inputs: the labels shifted as the model does); and with keys
where the names are unusual (`client.measure(..., targets_key=...)`, `--inputs-key`). λmax
is compared with scipy's eigsh on float64 Hessian-vector products of the same model and loss
(token-mean cross-entropy over the non-ignored labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sharpness_client import Client, JobStatus
from tests import hf_checkpoints as H
from tests import hf_seq2seq as S
from tests.sdk.test_e2e_cli import sharpness
from tests.sdk.test_hf_e2e import RTOL, _reference_lambda_max

pytestmark = pytest.mark.integration
pytest.importorskip("transformers")
pytest.importorskip("scipy")

N = 10
OPTIONS = {"params": {"lambda_max": {"tol": 1e-5}}, "device": "cpu", "batch_size": 4}


def _close(got: float, exact: float) -> None:
    print(f"lambda_max service {got:.9g} reference {exact:.9g} rel {abs(got - exact) / exact:.2e}")
    assert abs(got - exact) <= RTOL * abs(exact), (got, exact)


def _classifier_loss(inputs: dict[str, np.ndarray], y: np.ndarray):
    feed = {k: torch.from_numpy(v) for k, v in inputs.items()}
    target = torch.from_numpy(y)
    return lambda m: nn.functional.cross_entropy(m(**feed).logits, target)


def test_sdk_sequence_classification_with_label(service_url: str, tmp_path: Path) -> None:
    model = H.bert_seq(seed=41)
    folder = H.save(model, tmp_path / "bert")
    ids, mask = H.token_batch(N, 8, seed=41)
    label = np.random.default_rng(41).integers(0, 3, N)
    np.savez(tmp_path / "d.npz", input_ids=ids.numpy(), attention_mask=mask.numpy(), label=label)
    with Client() as client:
        job = client.measure(folder, tmp_path / "d.npz", ["lambda_max"], timeout=300, **OPTIONS)
        assert job.status == JobStatus.succeeded
        assert job.spec.dataset.targets_key == "label"
        # unusual names: the keys of measure() go to the upload and the job
        np.savez(tmp_path / "odd.npz", tokens=ids.numpy(), answer=label)
        odd = client.measure(
            folder, tmp_path / "odd.npz", ["lambda_max"], timeout=300,
            inputs_key={"input_ids": "tokens"}, targets_key="answer", **OPTIONS,
        )  # fmt: skip
        assert odd.status == JobStatus.succeeded
        assert client.datasets.get(odd.spec.dataset.id).targets_key == "answer"  # stored
    exact = _reference_lambda_max(
        model, _classifier_loss({"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, label)
    )
    _close(job.value("lambda_max"), exact)
    exact_odd = _reference_lambda_max(model, _classifier_loss({"input_ids": ids.numpy()}, label))
    _close(odd.value("lambda_max"), exact_odd)


def test_sdk_image_classification_with_pixel_values(service_url: str, tmp_path: Path) -> None:
    model = S.vit(seed=42)
    folder = H.save(model, tmp_path / "vit")
    rng = np.random.default_rng(42)
    pixels = rng.standard_normal((N, 3, 8, 8)).astype(np.float32)
    label = rng.integers(0, 4, N)
    np.savez(tmp_path / "img.npz", pixel_values=pixels, label=label)
    with Client() as client:
        job = client.measure(folder, tmp_path / "img.npz", ["lambda_max"], timeout=300, **OPTIONS)
    assert job.status == JobStatus.succeeded
    assert job.spec.dataset.inputs_key == "pixel_values"
    _close(
        job.value("lambda_max"),
        _reference_lambda_max(model, _classifier_loss({"pixel_values": pixels}, label)),
    )


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_folders_from_the_sdk_and_the_cli(
    service_url: str, tmp_path: Path, family: str
) -> None:
    model = getattr(S, family)(seed=43)
    folder = H.save(model, tmp_path / family)
    arrays = S.seq2seq_arrays(model, n=N, seed=43)
    np.savez(tmp_path / "s2s.npz", **arrays)
    with Client() as client:
        job = client.measure(folder, tmp_path / "s2s.npz", ["lambda_max"], timeout=300, **OPTIONS)
        assert job.status == JobStatus.succeeded
        assert client.models.get(job.spec.model).head == "seq2seq_lm"
    assert set(job.spec.dataset.inputs_key) == set(arrays) - {"labels"}
    exact = _reference_lambda_max(model, lambda m: S.reference_loss(m, arrays))
    _close(job.value("lambda_max"), exact)
    # what a tokenizer's text_target gives (no decoder arrays): the labels shifted as the
    # model does; the reference is the model's own loss given those labels
    plain = {k: arrays[k] for k in ("input_ids", "attention_mask", "labels")}
    np.savez(tmp_path / "plain.npz", **plain)
    with Client() as client:
        bare = client.measure(
            folder, tmp_path / "plain.npz", ["lambda_max"], timeout=300, **OPTIONS
        )
    feed = {k: torch.from_numpy(v) for k, v in plain.items()}
    _close(bare.value("lambda_max"), _reference_lambda_max(model, lambda m: m(**feed).loss))
    args = ["measure", str(folder), "--data", str(tmp_path / "s2s.npz"), "--measure", "lambda_max"]
    opts = ["--param", "lambda_max.tol=1e-5", "--device", "cpu", "--batch-size", "4", "--json"]
    proc = sharpness(*args, *opts, url=service_url)
    assert proc.returncode == 0, proc.stderr
    _close(json.loads(proc.stdout)["results"]["lambda_max"]["value"], exact)
    # unusual names with keys on the command line
    renamed = {"src": arrays["input_ids"], "tgt_in": arrays["decoder_input_ids"]}
    np.savez(tmp_path / "odd.npz", **renamed, y=arrays["labels"])
    keys = json.dumps({"input_ids": "src", "decoder_input_ids": "tgt_in"})
    proc = sharpness(
        "measure", str(folder), "--data", str(tmp_path / "odd.npz"), "--measure", "lambda_max",
        "--inputs-key", keys, "--targets-key", "y", *opts, url=service_url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plain = {"input_ids": arrays["input_ids"], "decoder_input_ids": arrays["decoder_input_ids"]}
    exact_odd = _reference_lambda_max(
        model, lambda m: S.reference_loss(m, {**plain, "labels": arrays["labels"]})
    )
    _close(json.loads(proc.stdout)["results"]["lambda_max"]["value"], exact_odd)
