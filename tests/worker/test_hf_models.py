"""Hugging Face checkpoints in the worker: built by transformers from config.json, weights from
safetensors only, outputs identical to the model that was saved; unsafe or incomplete
checkpoints refused with the reason."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from tasks.worker.loaders import LoadError, load_model
from tests import hf_checkpoints as H

pytest.importorskip("transformers")


def _zip(folder: Path, tmp: Path, **kwargs) -> Path:
    path = tmp / "blob"
    path.write_bytes(H.zip_folder(folder, **kwargs))
    return path


def _load(path: Path, **meta):
    return load_model(path, {"format": "huggingface", "filename": "ckpt.zip", **meta})


def test_bert_zip_matches_the_saved_model_exactly(tmp_path: Path) -> None:
    model = H.bert_seq(seed=3)
    folder = H.save(model, tmp_path / "bert")
    loaded = _load(_zip(folder, tmp_path, inside="bert/"))
    assert loaded.format == "huggingface" and loaded.input_shape is None
    m = loaded.module
    assert type(m).__name__ == "BertForSequenceClassification" and not m.training
    assert m.config._attn_implementation == "eager"
    ids, mask = H.token_batch()
    with torch.no_grad():
        out = m(input_ids=ids, attention_mask=mask)
        ref = model(input_ids=ids, attention_mask=mask)
        assert torch.equal(out.logits, ref.logits)
        assert torch.equal(m(ids).logits, model(ids).logits)  # input_ids alone, positionally
    saved = dict(model.named_parameters())
    for name, p in m.named_parameters():
        assert torch.equal(p, saved[name]), name


def test_gpt2_bare_safetensors_with_config_in_meta_keeps_tied_weights(tmp_path: Path) -> None:
    model = H.gpt2_lm(seed=4)
    folder = H.save(model, tmp_path / "gpt2")
    loaded = _load(folder / "model.safetensors", config=H.config_of(folder))
    m = loaded.module
    assert type(m).__name__ == "GPT2LMHeadModel"
    assert m.lm_head.weight is m.transformer.wte.weight  # one storage, as saved
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in model.parameters())
    ids, _ = H.token_batch(4, 11)
    with torch.no_grad():
        out = m(input_ids=ids)
        assert out.logits.shape == (4, 11, H.VOCAB)
        assert torch.equal(out.logits, model(input_ids=ids, use_cache=False).logits)
        assert out.get("past_key_values") is None  # no cache in the outputs


def test_sharded_checkpoint_and_declared_head(tmp_path: Path) -> None:
    model = H.build("BertForMaskedLM", H.bert_config(), seed=5)
    folder = H.save(model, tmp_path / "mlm", max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").exists()
    loaded = _load(_zip(folder, tmp_path))
    ids, mask = H.token_batch()
    with torch.no_grad():
        assert torch.equal(
            loaded.module(input_ids=ids, attention_mask=mask).logits,
            model(input_ids=ids, attention_mask=mask).logits,
        )


def test_image_classification_head(tmp_path: Path) -> None:
    from transformers import ViTConfig

    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, num_labels=4,
    )  # fmt: skip
    model = H.build("ViTForImageClassification", config, seed=6)
    folder = H.save(model, tmp_path / "vit")
    loaded = _load(_zip(folder, tmp_path))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module(x).logits, model(x).logits)


def test_hessian_vector_products_are_exact_through_attention(tmp_path: Path) -> None:
    """Second derivatives of the loaded model in float64: H·v by double backward equals the
    closed-form Hessian of the classifier block, and central differences of the gradient for
    the first attention layer's query weights (so through softmax attention)."""
    model = H.bert_seq(seed=7)
    loaded = _load(_zip(H.save(model, tmp_path / "b"), tmp_path)).module.double()
    ids, mask = H.token_batch()
    y = torch.tensor([0, 1, 2, 1, 0])

    def hvp(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        logits = loaded(input_ids=ids, attention_mask=mask).logits
        (g,) = torch.autograd.grad(
            torch.nn.functional.cross_entropy(logits, y), w, create_graph=True
        )
        return torch.autograd.grad(g, w, grad_outputs=v)[0]

    def grad(w: torch.Tensor) -> torch.Tensor:
        logits = loaded(input_ids=ids, attention_mask=mask).logits
        return torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), w)[0]

    w = loaded.classifier.weight
    v = torch.randn_like(w)
    # linear head on fixed features f_n: H·v = (1/N) sum_n A_n (V f_n) f_n^T, A = diag(p) - pp^T
    with torch.no_grad():
        feats = loaded.bert(input_ids=ids, attention_mask=mask).pooler_output
        p = torch.softmax(feats @ w.T + loaded.classifier.bias, dim=1)
        a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        exact = torch.einsum("ncd,nd,nf->cf", a, feats @ v.T, feats) / ids.shape[0]
    torch.testing.assert_close(hvp(w, v), exact, rtol=1e-10, atol=1e-13)

    q = loaded.bert.encoder.layer[0].attention.self.query.weight
    v = torch.randn_like(q)
    got = hvp(q, v)
    h = 1e-4
    with torch.no_grad():
        q.add_(h * v)
    plus = grad(q)
    with torch.no_grad():
        q.sub_(2 * h * v)
    minus = grad(q)
    with torch.no_grad():
        q.add_(h * v)
    scale = float(got.abs().max())
    assert scale > 1e-5  # the attention block has real curvature
    torch.testing.assert_close(got, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-6 * scale)


# ------------------------------------------------------------------------------- refusals
def test_config_with_auto_map_is_refused(tmp_path: Path) -> None:
    folder = H.save(H.bert_seq(), tmp_path / "b")
    config = H.config_of(folder) | {"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError, match="auto_map.*never run"):
        _load(_zip(folder, tmp_path))


def test_unknown_model_type_is_refused(tmp_path: Path) -> None:
    folder = H.save(H.bert_seq(), tmp_path / "b")
    (folder / "config.json").write_text(json.dumps(H.config_of(folder) | {"model_type": "evil"}))
    with pytest.raises(LoadError, match="'evil'.*not built into transformers"):
        _load(_zip(folder, tmp_path))


def test_pickled_weights_in_the_zip_are_refused(tmp_path: Path) -> None:
    folder = H.save(H.bert_seq(), tmp_path / "b")
    path = _zip(folder, tmp_path, extra={"pytorch_model.bin": b"\x80\x04."})
    with pytest.raises(LoadError, match="pytorch_model.bin.*safetensors only"):
        _load(path)


def test_missing_head_weights_are_never_initialised_at_random(tmp_path: Path) -> None:
    """A base-model checkpoint declared as a classifier lacks the classifier's weights."""
    base = H.build("BertModel", H.bert_config(), seed=1)
    folder = H.save(base, tmp_path / "base")
    with pytest.raises(LoadError, match="head"):
        _load(_zip(folder, tmp_path))  # architectures: BertModel names no head
    with pytest.raises(LoadError, match="parameters but the safetensors hold"):
        _load(_zip(folder, tmp_path), head="sequence_classification")
    # a masked-LM checkpoint holds more values than a classifier needs, but not its weights
    mlm = H.save(H.build("BertForMaskedLM", H.bert_config(), seed=2), tmp_path / "mlm")
    with pytest.raises(LoadError, match=r"missing \[.*'classifier.weight'"):
        _load(_zip(mlm, tmp_path), head="sequence_classification")


def test_config_larger_than_the_weights_is_refused_before_building(tmp_path: Path) -> None:
    folder = H.save(H.bert_seq(), tmp_path / "b")
    (folder / "config.json").write_text(json.dumps(H.config_of(folder) | {"vocab_size": 10**7}))
    with pytest.raises(LoadError, match="parameters but the safetensors hold"):
        _load(_zip(folder, tmp_path))


def test_shape_mismatch_is_refused(tmp_path: Path) -> None:
    folder = H.save(H.bert_seq(), tmp_path / "b")
    config = H.config_of(folder) | {"intermediate_size": 30}  # fewer parameters than stored
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError, match="do not fit|shapes differ|could not load"):
        _load(_zip(folder, tmp_path))


def test_zip_without_weights_is_refused(tmp_path: Path) -> None:
    folder = H.save(H.bert_seq(), tmp_path / "b")
    path = tmp_path / "blob"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(folder / "config.json", "config.json")
        zf.writestr("weights.safetensors", (folder / "model.safetensors").read_bytes())
    with pytest.raises(LoadError, match="no model.safetensors"):
        _load(path)


def test_self_exported_model_output_loads_once_its_types_are_imported(tmp_path: Path) -> None:
    """A user's own torch.export of a transformers model stores its ModelOutput by class
    name: in a fresh process torch.export.load alone refuses it, the worker's loader imports
    transformers' output types first and loads it."""
    import os
    import subprocess
    import sys

    model = H.bert_seq(seed=8)
    ids, mask = H.token_batch(4, 6)
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        model,
        (),
        {"input_ids": ids, "attention_mask": mask},
        dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
    )
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    code = (
        "from tasks.worker.loaders import load_model\n"
        "import torch\n"
        f"p = {str(path)!r}\n"
        "try:\n    torch.export.load(p); print('torch alone loads it')\n"
        "except RuntimeError:\n    print('torch alone refuses it')\n"
        "m = load_model(p, {'format': 'torch_export'}).module\n"
        "x = torch.ones(3, 6, dtype=torch.long)\n"
        "print(type(m(input_ids=x, attention_mask=x)).__name__)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert lines[0] == "torch alone refuses it"  # the worker's loader imports the types
    assert lines[1] == "SequenceClassifierOutput"


# ------------------------------------------------------------------- encoder-decoder models


def _assert_decoder_norm_hessian(m, batches, arrays: dict, family: str, own: float):
    """The engine's loss over `batches` equals the model's own, and its Hessian block of the
    decoder's norm weight equals the dense float64 Hessian of the model's loss on `arrays`;
    returns that reference Hessian."""
    from tasks.engine.problem import HessianProblem
    from tests import hf_seq2seq as S
    from tests.engine.reference import dense_hessian

    problem = HessianProblem(m, batches, loss="cross_entropy")
    assert problem.loss() == pytest.approx(own, rel=1e-12)
    name = {
        "t5": "decoder.final_layer_norm.weight",
        "bart": "model.decoder.layernorm_embedding.weight",
    }[family]
    w = dict(m.named_parameters())[name].detach().clone()
    ref = torch.autograd.functional.hessian(lambda p: S.reference_loss(m, arrays, **{name: p}), w)
    torch.testing.assert_close(dense_hessian(problem.restrict([name])), ref, rtol=1e-9, atol=1e-12)
    return ref


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_checkpoint_measures_exactly_with_padded_targets(
    tmp_path: Path, family: str
) -> None:
    """A T5 or BART save_pretrained folder loads as ...ForConditionalGeneration (head
    seq2seq_lm, from its architectures), returns no cache (the decoder's config included), and
    the engine's loss and Hessian block over a dataset of decoder inputs and -100-padded labels,
    cut in batches, equal the model's own token-mean loss and its dense float64 Hessian."""
    import numpy as np

    from tasks.worker.datasets import load_dataset, probe
    from tests import hf_seq2seq as S

    model = getattr(S, family)(seed=11)
    folder = H.save(model, tmp_path / family)
    assert H.config_of(folder)["architectures"][0].endswith("ForConditionalGeneration")
    loaded = _load(_zip(folder, tmp_path, inside=f"{family}/"))
    m = loaded.module
    assert type(m) is type(model) and not m.training
    assert all(not c.use_cache for c in (x.config for x in m.modules() if hasattr(x, "config")))
    arrays = S.seq2seq_arrays(model)
    assert (arrays["labels"] == S.IGNORE).any()
    np.savez(tmp_path / "s2s.npz", **arrays)
    m.double()
    batches = load_dataset(tmp_path / "s2s.npz", None, batch_size=2, dtype=torch.float64)
    out = probe(loaded, batches, "s2s.npz")
    assert out.shape[-1] == H.VOCAB
    with torch.no_grad():
        inputs = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "labels"}
        raw = m(**inputs)
        assert raw.get("past_key_values") is None
        own = m(**inputs, labels=torch.from_numpy(arrays["labels"])).loss
    ref = _assert_decoder_norm_hessian(m, batches, arrays, family, float(own))
    assert float(ref.abs().max()) > 1e-4


def test_seq2seq_head_declared_and_refused_where_transformers_has_none(tmp_path: Path) -> None:
    from tests import hf_seq2seq as S

    model = S.t5(seed=1)
    folder = H.save(model, tmp_path / "t5")
    config = H.config_of(folder)
    config.pop("architectures")
    loaded = _load(folder / "model.safetensors", config=config, head="seq2seq_lm")
    assert type(loaded.module).__name__ == "T5ForConditionalGeneration"
    bert = H.save(H.bert_seq(), tmp_path / "bert")
    with pytest.raises(LoadError, match="no seq2seq_lm model for model_type 'bert'"):
        _load(_zip(bert, tmp_path), head="seq2seq_lm")


def test_arrays_the_forward_takes_are_never_dropped_silently(tmp_path: Path) -> None:
    import numpy as np

    from tasks.worker.datasets import load_dataset, probe, unused_inputs_note
    from tests import hf_seq2seq as S

    model = S.bart(seed=2)
    loaded = _load(_zip(H.save(model, tmp_path / "bart"), tmp_path))
    arrays = S.seq2seq_arrays(model)
    # names recognised by the service that leave out arrays the forward takes: refused
    # (here the ids are 'x'/'y', so the decoder's arrays are no companions of input_ids)
    odd = {
        "x": arrays["input_ids"],
        "y": arrays["labels"],
        "decoder_input_ids": arrays["decoder_input_ids"],
        "decoder_attention_mask": arrays["decoder_attention_mask"],
    }
    np.savez(tmp_path / "s.npz", **odd)
    with pytest.raises(LoadError) as err:
        probe(loaded, load_dataset(tmp_path / "s.npz", None), "s.npz")
    detail = err.value.detail
    assert "'decoder_attention_mask', 'decoder_input_ids'" in detail and "leave them out" in detail
    assert "--inputs-key" in detail and "inputs_key={'input_ids': 'x'" in detail
    # the fix it names works; names a user gave are taken as meant, and the array they leave
    # out (decoder_attention_mask) is named in the note the job carries in its evaluation
    fixed = {"input_ids": "x", "decoder_input_ids": "decoder_input_ids"}
    given = load_dataset(tmp_path / "s.npz", None, inputs_key=fixed)
    probe(loaded, given, "s.npz")
    note = unused_inputs_note(loaded, given)
    assert note is not None and "'decoder_attention_mask'" in note and "inputs_key" in note
    assert "'decoder_input_ids'" not in note
    everything = {**fixed, "decoder_attention_mask": "decoder_attention_mask"}
    assert (
        unused_inputs_note(loaded, load_dataset(tmp_path / "s.npz", None, inputs_key=everything))
        is None
    )
    # decoder inputs cannot be made from real-valued targets: refused with the recipe
    np.savez(tmp_path / "n.npz", input_ids=arrays["input_ids"], labels=np.zeros((5, 6)) + 0.5)
    with pytest.raises(LoadError, match="needs decoder_input_ids.*prepare_decoder_input_ids"):
        probe(loaded, load_dataset(tmp_path / "n.npz", None, loss="mse"), "n.npz", loss="mse")


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_without_decoder_inputs_shifts_the_labels_as_the_model_does(
    tmp_path: Path, family: str
) -> None:
    """input_ids, attention_mask and -100-padded labels only (what a tokenizer's text_target
    gives): the decoder inputs are the labels shifted as the model does, so the loss is the
    model's own given those labels, and the Hessian block its dense float64 Hessian."""
    import numpy as np

    from tasks.worker.datasets import load_dataset, probe
    from tests import hf_seq2seq as S

    model = getattr(S, family)(seed=12)
    loaded = _load(_zip(H.save(model, tmp_path / family), tmp_path))
    m = loaded.module.double()
    arrays = S.seq2seq_arrays(model)
    plain = {k: arrays[k] for k in ("input_ids", "attention_mask", "labels")}
    np.savez(tmp_path / "p.npz", **plain)
    batches = load_dataset(tmp_path / "p.npz", None, batch_size=2, dtype=torch.float64)
    probe(loaded, batches, "p.npz")
    assert torch.equal(
        batches[0].inputs["decoder_input_ids"],
        torch.from_numpy(arrays["decoder_input_ids"][:2]),
    )
    with torch.no_grad():  # transformers derives the decoder inputs from the labels itself
        feed = {k: torch.from_numpy(v) for k, v in plain.items()}
        own = m(**feed).loss
    shifted = {**plain, "decoder_input_ids": arrays["decoder_input_ids"]}
    _assert_decoder_norm_hessian(m, batches, shifted, family, float(own))


@pytest.mark.parametrize(
    ("config_name", "cls_name"),
    [
        ("MBartConfig", "MBartForConditionalGeneration"),
        ("PegasusConfig", "PegasusForConditionalGeneration"),
        ("MarianConfig", "MarianMTModel"),
    ],
)
def test_other_encoder_decoder_families_load_as_seq2seq(
    tmp_path: Path, config_name: str, cls_name: str
) -> None:
    import transformers

    from tests import hf_seq2seq as S

    base = S.bart_config().to_dict()
    sizes = ("layers", "attention_heads", "ffn_dim")
    keep = {k: base[k] for k in base if k == "d_model" or k.endswith(sizes)}
    config = getattr(transformers, config_name)(
        **keep, vocab_size=H.VOCAB, max_position_embeddings=64, pad_token_id=1,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
    )  # fmt: skip
    model = H.build(cls_name, config, seed=5)
    folder = H.save(model, tmp_path / "m")
    loaded = _load(_zip(folder, tmp_path))
    assert type(loaded.module).__name__ == cls_name
    # the reference: transformers' own loading of the folder (Marian rebuilds its sinusoidal
    # positions, which it never saves, so the saved model's noisy copy is not the reference)
    ref = getattr(transformers, cls_name).from_pretrained(folder, attn_implementation="eager")
    arrays = S.seq2seq_arrays(model)
    feed = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(loaded.module(**feed).logits, ref.eval()(**feed, use_cache=False).logits)


def test_encoder_decoder_never_guesses_its_decoder_inputs(tmp_path: Path) -> None:
    """BART given input_ids alone would decode a shifted copy of them: the loaded model
    refuses instead, in copies of it too (a data-parallel rank, a dense reference)."""
    import copy

    from tests import hf_seq2seq as S

    loaded = _load(_zip(H.save(S.bart(seed=3), tmp_path / "bart"), tmp_path)).module
    ids, _ = H.token_batch(2, 5)
    for m in (loaded, copy.deepcopy(loaded)):
        with pytest.raises(ValueError, match="needs decoder_input_ids"):
            m(input_ids=ids)
        assert m(input_ids=ids, decoder_input_ids=ids).logits.shape == (2, 5, H.VOCAB)


def test_a_job_names_the_input_its_given_names_leave_out(rt, tmp_path: Path) -> None:
    """Through the worker's job: names a user gave that leave out an array the model's
    forward takes are used as given, and the job's evaluation says which array and the fix;
    with every input named there is no note."""
    import numpy as np

    from tasks.contract.spec import JobSpec
    from tasks.worker.job import execute
    from tests import hf_seq2seq as S
    from tests.worker.blobs import put

    model = S.bart(seed=2)
    (tmp_path / "bart.zip").write_bytes(H.zip_folder(H.save(model, tmp_path / "bart")))
    arrays = S.seq2seq_arrays(model)
    np.savez(tmp_path / "s.npz", x=arrays["input_ids"], y=arrays["labels"], **{
        k: arrays[k] for k in ("decoder_input_ids", "decoder_attention_mask")
    })  # fmt: skip
    model_id = put(rt.blobs, "models", tmp_path / "bart.zip", format="huggingface")
    data_id = put(rt.blobs, "datasets", tmp_path / "s.npz", format="npz")
    names = {"input_ids": "x", "decoder_input_ids": "decoder_input_ids"}
    notes = []
    for inputs_key in (names, {**names, "decoder_attention_mask": "decoder_attention_mask"}):
        spec = JobSpec.model_validate({
            "model": model_id,
            "dataset": {"id": data_id, "inputs_key": inputs_key, "targets_key": "y"},
            "measures": [{"name": "weight_norms"}],
            "device": "cpu",
        })  # fmt: skip
        job_id = rt.store.create(spec, "cpu").id
        assert execute(job_id, rt) == "succeeded", rt.store.get(job_id).error
        notes.append(rt.store.get(job_id).evaluation.get("data_note"))
    assert notes[0] is not None and "'decoder_attention_mask'" in notes[0], notes
    assert notes[1] is None
