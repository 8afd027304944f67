"""The SDK's export helper on the models people bring: transformers BERT (keyword inputs,
ModelOutput) and GPT-2 (token ids, tied head), a token-id LSTM, several positional inputs.
Each archive is loaded by the worker's own loader, runs at batch sizes and sequence lengths
other than the example's, equals the original model, and takes exact second derivatives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sharpness_client._convert import export_module, zip_pretrained_folder
from tasks.worker.loaders import load_model
from tests import hf_checkpoints as H

pytest.importorskip("transformers")


def _load(data: bytes, tmp: Path) -> nn.Module:
    path = tmp / "model.pt2"
    path.write_bytes(data)
    return load_model(path, {"format": "torch_export", "filename": "model.pt2"}).module


def _logits(out):
    return out if isinstance(out, torch.Tensor) else out["logits"]


def _hvp(model: nn.Module, param: str, v: torch.Tensor, loss_of) -> torch.Tensor:
    w = dict(model.named_parameters())[param]
    (g,) = torch.autograd.grad(loss_of(model), w, create_graph=True)
    return torch.autograd.grad(g, w, grad_outputs=v)[0]


def test_bert_keyword_inputs_dynamic_batch_and_sequence(tmp_path: Path) -> None:
    model = H.bert_seq(seed=21).double()
    model.config._attn_implementation = "sdpa"  # what from_pretrained gives by default
    ids, mask = H.token_batch(4, 10)
    data = export_module(model, {"input_ids": ids.int().numpy(), "attention_mask": mask})
    assert model.config.use_cache is True and "forward" not in vars(model)  # left as it was
    exported = _load(data, tmp_path)
    # the archive loads where transformers was never imported (a worker measuring a .pt2)
    code = (
        "import sys; from tasks.worker.loaders import load_model\n"
        f"load_model({str(tmp_path / 'model.pt2')!r}, {{'format': 'torch_export'}})\n"
        "assert 'transformers' not in sys.modules\n"
    )
    env = {**os.environ, "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    for n, t in ((4, 10), (3, 7), (6, 13)):  # other batch sizes and sequence lengths
        ids2, mask2 = H.token_batch(n, t, seed=n)
        out = exported(input_ids=ids2, attention_mask=mask2)
        assert type(out) is dict and "logits" in out  # the ModelOutput's fields
        with torch.no_grad():
            ref = model(input_ids=ids2, attention_mask=mask2).logits
        torch.testing.assert_close(_logits(out), ref, rtol=1e-12, atol=1e-12)

    # second derivatives through the stored attention (math form) equal the original's (eager)
    y = torch.tensor([0, 2, 1, 1])

    def loss_of(m: nn.Module) -> torch.Tensor:
        out = _logits(m(input_ids=ids, attention_mask=mask))
        return nn.functional.cross_entropy(out, y)

    model.config._attn_implementation = "eager"
    name = "bert.encoder.layer.0.attention.self.query.weight"
    v = torch.randn(32, 32, dtype=torch.float64)
    got, ref = _hvp(exported, name, v, loss_of), _hvp(model, name, v, loss_of)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


def test_gpt2_token_ids_positional_tied_head(tmp_path: Path) -> None:
    model = H.gpt2_lm(seed=22)
    ids, _ = H.token_batch(3, 8)
    exported = _load(export_module(model, ids), tmp_path)
    assert model.config.use_cache is True and not model.training
    ids2, _ = H.token_batch(5, 12, seed=2)
    with torch.no_grad():
        out = _logits(exported(ids2))
        ref = model(ids2, use_cache=False).logits
    assert out.shape == (5, 12, H.VOCAB)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # float32, math vs fused kernel
    # torch.export keeps both names of the tied storage; the values are one tensor's
    params = dict(exported.named_parameters(remove_duplicate=False))
    assert torch.equal(params["lm_head.weight"], params["transformer.wte.weight"])


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.emb = nn.Embedding(50, 8)
        self.lstm = nn.LSTM(8, 12, batch_first=True)
        self.out = nn.Linear(12, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.emb(ids))
        return self.out(h[:, -1])


def test_token_id_lstm_from_numpy_int32(tmp_path: Path) -> None:
    model = LSTMClassifier().train()
    ids = np.random.default_rng(0).integers(0, 50, size=(4, 6)).astype(np.int32)
    exported = _load(export_module(model, ids), tmp_path)
    assert model.training  # the caller's mode is restored
    model.eval()
    other = torch.randint(0, 50, (7, 6))
    with torch.no_grad():
        torch.testing.assert_close(exported(other), model(other), rtol=1e-6, atol=1e-6)


class TwoInputs(nn.Module):
    """Several positional inputs, one of them integer; the sequence length is fixed by the
    flattening Linear, so export keeps it static and the batch dynamic."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.emb = nn.Embedding(20, 4)
        self.lin = nn.Linear(5 * 4 + 3, 2)

    def forward(self, ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        e = self.emb(ids).flatten(1)
        return self.lin(torch.cat([e, extra], dim=1))


def test_several_positional_inputs_with_a_fixed_sequence(tmp_path: Path) -> None:
    model = TwoInputs()
    ids, extra = torch.randint(0, 20, (3, 5)), np.random.default_rng(1).normal(size=(3, 3))
    exported = _load(export_module(model, (ids, extra)), tmp_path)
    ids2, extra2 = torch.randint(0, 20, (9, 5)), torch.randn(9, 3)
    with torch.no_grad():
        torch.testing.assert_close(exported(ids2, extra2), model(ids2, extra2))
    with pytest.raises(Exception, match="5"):  # the sequence length stayed fixed
        exported(torch.randint(0, 20, (9, 6)), extra2)


class FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.reshape(4, 6))


def test_refusals_name_the_fix() -> None:
    with pytest.raises(ValueError, match="dimension 0 is the batch.*at least 2"):
        export_module(nn.Linear(3, 2), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"dynamic batch.*x.shape\[0\] or -1"):
        export_module(FixedBatch(), torch.randn(4, 6))
    with pytest.raises(ValueError, match="no tensor"):
        export_module(nn.Linear(3, 2), ("text",))


def test_zip_pretrained_folder_takes_only_config_and_safetensors(tmp_path: Path) -> None:
    import io
    import zipfile

    folder = H.save(H.gpt2_lm(), tmp_path / "g", max_shard_size="40KB")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    (folder / "modeling_custom.py").write_text("import os")
    buf = io.BytesIO()
    zip_pretrained_folder(folder, buf)
    names = set(zipfile.ZipFile(buf).namelist())
    shards = {p.name for p in folder.glob("model-*.safetensors")}
    assert len(shards) >= 2 and names == {"config.json", "model.safetensors.index.json"} | shards
    (folder / "model.safetensors.index.json").unlink()
    for s in shards:
        (folder / s).unlink()
    with pytest.raises(FileNotFoundError, match="only pytorch_model.bin.*never unpickles"):
        zip_pretrained_folder(folder, io.BytesIO())


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_exports_without_any_cache(tmp_path: Path, family: str) -> None:
    """T5 and BART keep a copy of the config in their decoder (use_cache on by default): the
    export turns every cache off, the archive runs at other batch sizes and equals the model,
    and its second derivatives are the model's."""
    from tests import hf_seq2seq as S

    model = getattr(S, family)(seed=31).double()
    assert model.config.use_cache is True and model.get_decoder().config.use_cache is True
    before = [m.config.use_cache for m in model.modules() if hasattr(m, "config")]
    arrays = S.seq2seq_arrays(model, n=3)
    inputs = {k: v for k, v in arrays.items() if k != "labels"}
    exported = _load(export_module(model, inputs), tmp_path)
    assert "forward" not in vars(model)  # left as it was, its configs too
    assert [m.config.use_cache for m in model.modules() if hasattr(m, "config")] == before
    more = S.seq2seq_arrays(model, n=5, seed=9)
    feed = {k: torch.from_numpy(v) for k, v in more.items() if k != "labels"}
    out = exported(**feed)
    assert set(out) == {"logits", "encoder_last_hidden_state"}, set(out)
    with torch.no_grad():
        ref = model(**feed, use_cache=False).logits
    torch.testing.assert_close(out["logits"], ref, rtol=1e-10, atol=1e-12)
    y = torch.from_numpy(more["labels"])

    def loss_of(m: nn.Module) -> torch.Tensor:
        logits = _logits(m(**feed))
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)

    name = {
        "t5": "decoder.final_layer_norm.weight",
        "bart": "model.decoder.layernorm_embedding.weight",
    }[family]
    v = torch.randn(16, dtype=torch.float64)
    got = _hvp(exported, name, v, loss_of)
    want = _hvp(model, name, v, lambda m: loss_of(_NoCache(m)))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * float(want.abs().max()))


class _NoCache(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **kwargs):
        return self.model(**kwargs, use_cache=False)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this layer is not supported")


def test_export_errors_name_the_real_cause() -> None:
    with pytest.raises(ValueError) as err:
        export_module(Broken(), torch.randn(4, 3))
    assert "this layer is not supported" in str(err.value)
    assert "batch size is not the cause" in str(err.value)
