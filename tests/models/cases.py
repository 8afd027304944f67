"""Models people train, small and random-initialised, with data and an independent reference.

Each case is a real architecture from its library (transformers' BERT, GPT-2, ViT and ResNet;
torch's LSTM), or written here where no library ships it small (a weight-tied language model,
a BatchNorm CNN). Nothing is downloaded.

The reference is deliberately independent of the engine: a float64 copy of the model, the
loss its own library computes where there is one (Hugging Face's `labels=` loss, which shifts
nothing here because the labels are already next tokens, and averages over the positions
whose label is not -100), the whole dataset as one batch — or, for train-mode BatchNorm, the
same batches the service cuts, each normalised by its own statistics — and scipy's `eigsh` on
Hessian-vector products by plain double backward.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from tests import hf_checkpoints as hf  # noqa: E402

N = 12  # examples
T = 10  # sequence length
BATCH = 5  # the service cuts 12 examples into 5 + 5 + 2


@dataclass
class Case:
    """A model, its dataset arrays, how the service is asked to measure it, and a reference
    loss over the whole dataset for a float64 copy of the model."""

    name: str
    model: nn.Module
    arrays: dict[str, np.ndarray]
    inputs_key: Any
    targets_key: str
    reference_loss: Callable[[nn.Module], Tensor]
    loss: str = "cross_entropy"
    mode: str = "eval"
    rtol: float = 1e-6  # float32 model against the float64 reference
    job: dict[str, Any] = field(default_factory=dict)  # extra job fields (class_dim, ...)
    trace_params: str = "*classifier.*"  # a small block whose dense Hessian is cheap
    batch_size: int = BATCH

    def inputs(self, dtype: torch.dtype = torch.float32) -> Any:
        def t(name: str) -> Tensor:
            a = torch.from_numpy(self.arrays[name])
            return a.to(dtype) if a.is_floating_point() else a

        if isinstance(self.inputs_key, str):
            return t(self.inputs_key)
        if isinstance(self.inputs_key, dict):
            return {k: t(v) for k, v in self.inputs_key.items()}
        return tuple(t(v) for v in self.inputs_key)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _hf_loss(model: nn.Module, **inputs: Tensor) -> Tensor:
    return model(**inputs).loss


# ------------------------------------------------------------------------ transformers
def bert() -> Case:
    model = hf.bert_seq(seed=1)
    rng = _rng(1)
    ids = rng.integers(1, hf.VOCAB, (N, T)).astype(np.int64)
    mask = np.ones((N, T), np.int64)
    for i in range(N):  # right padding of varying length
        pad = int(rng.integers(0, 4))
        if pad:
            ids[i, -pad:], mask[i, -pad:] = 0, 0
    labels = rng.integers(0, 3, N).astype(np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def ref(m: nn.Module) -> Tensor:
        x = {k: torch.from_numpy(v) for k, v in arrays.items()}
        return _hf_loss(m, **x)

    return Case("bert", model, arrays, None, "labels", ref, rtol=5e-5)


def _lm_arrays(seed: int, vocab: int) -> dict[str, np.ndarray]:
    """Token ids and next-token labels, the last position and some padding set to -100."""
    rng = _rng(seed)
    ids = rng.integers(1, vocab, (N, T + 1)).astype(np.int64)
    labels = ids[:, 1:].copy()
    for i in range(N):
        pad = int(rng.integers(0, 5))
        if pad:
            labels[i, -pad:] = -100
    return {"input_ids": ids[:, :-1].copy(), "labels": labels}


def gpt2() -> Case:
    model = hf.gpt2_lm(seed=2)
    model.config.use_cache = False  # no key/value cache in the outputs: export needs tensors
    arrays = _lm_arrays(2, hf.VOCAB)

    def ref(m: nn.Module) -> Tensor:
        logits = m(input_ids=torch.from_numpy(arrays["input_ids"])).logits
        labels = torch.from_numpy(arrays["labels"])
        # Hugging Face's own causal-LM loss shifts its labels; these are already shifted, so
        # the reference is the plain token-level mean over the labels that are not -100.
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    return Case(
        "gpt2", model, arrays, "input_ids", "labels", ref, rtol=5e-5, trace_params="*.ln_f.*"
    )


def vit() -> Case:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=4,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(3)
    model = ViTForImageClassification(config).eval()
    rng = _rng(3)
    arrays = {
        "images": rng.standard_normal((N, 3, 8, 8)).astype(np.float32),
        "labels": rng.integers(0, 4, N).astype(np.int64),
    }

    def ref(m: nn.Module) -> Tensor:
        x = torch.from_numpy(arrays["images"]).double()
        return _hf_loss(m, pixel_values=x, labels=torch.from_numpy(arrays["labels"]))

    return Case("vit", model, arrays, None, "labels", ref, rtol=5e-5)


def _resnet_model(seed: int) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    # ResNet-18's topology (basic blocks, depths 2-2-2-2), narrow
    config = ResNetConfig(
        embedding_size=4,
        hidden_sizes=[4, 6, 8, 8],
        depths=[2, 2, 2, 2],
        layer_type="basic",
        num_labels=3,
    )
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config)
    with torch.no_grad():  # running statistics away from (0, 1), so eval and train differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def resnet(mode: str = "eval") -> Case:
    model = _resnet_model(4)
    rng = _rng(4)
    arrays = {
        "images": rng.standard_normal((N, 3, 8, 8)).astype(np.float32),
        "labels": rng.integers(0, 3, N).astype(np.int64),
    }
    x = torch.from_numpy(arrays["images"]).double()
    y = torch.from_numpy(arrays["labels"])
    batch = 6 if mode == "train" else BATCH
    ref = _batched_reference(lambda m, xb: m(pixel_values=xb).logits, x, y, mode, batch)
    # In train mode each BatchNorm normalises by the statistics of six images: the curvature
    # is large and float32 rounds it to about 1e-5 relative (the float64 run in
    # tests/models/test_engine_real_models.py matches the reference to 1e-9).
    rtol = 1e-4 if mode == "train" else 1e-6
    return Case(
        f"resnet-{mode}", model, arrays, None, "labels", ref, mode=mode, rtol=rtol, batch_size=batch
    )


def _batched_reference(forward, x: Tensor, y: Tensor, mode: str, batch: int = BATCH):
    """The loss of the dataset in the service's batches; in train mode each batch's
    BatchNorm uses its own statistics (running statistics dropped from the copy)."""

    def ref(m: nn.Module) -> Tensor:
        if mode == "train":
            m.train()
            for b in m.modules():
                if isinstance(b, nn.modules.batchnorm._BatchNorm):
                    b.track_running_stats = False
                    b.running_mean = b.running_var = None
        total = 0.0
        for i in range(0, N, batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            total = total + F.cross_entropy(forward(m, xb), yb, reduction="sum")
        return total / N

    return ref


# ---------------------------------------------------------------------- written here
class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int = 40, emb: int = 8, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, ids: Tensor) -> Tensor:
        out, _ = self.lstm(self.emb(ids))
        return self.head(out[:, -1])


def lstm() -> Case:
    torch.manual_seed(5)
    model = LSTMClassifier().eval()
    rng = _rng(5)
    arrays = {
        "tokens": rng.integers(0, 40, (N, T)).astype(np.int64),
        "label": rng.integers(0, 3, N).astype(np.int64),
    }

    def ref(m: nn.Module) -> Tensor:
        out = m(torch.from_numpy(arrays["tokens"]))
        return F.cross_entropy(out, torch.from_numpy(arrays["label"]))

    return Case("lstm", model, arrays, "tokens", "label", ref, trace_params="head.*")


class TiedLM(nn.Module):
    """Input and output embeddings are one weight; logits in torch's (N, V, T) layout."""

    def __init__(self, vocab: int = 30, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids: Tensor) -> dict[str, Tensor]:
        h = torch.tanh(self.mix(self.embed(ids)))
        return {"hidden": h, "scores": self.out(h).transpose(1, 2)}


def tied_lm() -> Case:
    torch.manual_seed(6)
    model = TiedLM().eval()
    arrays = _lm_arrays(6, 30)

    def ref(m: nn.Module) -> Tensor:
        scores = m(torch.from_numpy(arrays["input_ids"]))["scores"]
        return F.cross_entropy(scores, torch.from_numpy(arrays["labels"]))

    return Case(
        "tied-lm",
        model,
        arrays,
        "input_ids",
        "labels",
        ref,
        job={"output_key": "scores", "class_dim": 1},
        trace_params="mix.*",
    )


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def bn_cnn(mode: str = "train") -> Case:
    torch.manual_seed(7)
    model = BNNet().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
    rng = _rng(7)
    arrays = {
        "x": rng.standard_normal((N, 1, 6, 6)).astype(np.float32),
        "y": rng.integers(0, 3, N).astype(np.int64),
    }
    x = torch.from_numpy(arrays["x"]).double()
    ref = _batched_reference(lambda m, xb: m(xb), x, torch.from_numpy(arrays["y"]), mode)
    return Case(f"bn-cnn-{mode}", model, arrays, None, "y", ref, mode=mode, trace_params="fc.*")


# -------------------------------------------------------------------------- reference
def unique_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def reference_eigenvalues(case: Case, k: int = 3) -> np.ndarray:
    """Top-k eigenvalues of the float64 copy's Hessian by eigsh on double-backward HVPs."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    model = copy.deepcopy(case.model).double()
    params = [p for _, p in unique_parameters(model)]
    loss = case.reference_loss(model)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def matvec(v: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(-1))
        pieces, offset = [], 0
        for p in params:
            pieces.append(vt[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        hv = torch.autograd.grad(grads, params, grad_outputs=pieces, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    dim = sum(p.numel() for p in params)
    op = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    vals = eigsh(op, k=k, which="LA", tol=1e-12, v0=np.ones(dim) / np.sqrt(dim))[0]
    return np.sort(vals)[::-1]


def reference_block_hessian(case: Case) -> np.ndarray:
    """The dense float64 Hessian over the parameters matching `case.trace_params`."""
    import fnmatch

    model = copy.deepcopy(case.model).double()
    named = unique_parameters(model)
    every = {id(p): [n for n, q in model.named_parameters(remove_duplicate=False) if q is p]
             for _, p in named}  # fmt: skip
    params = [
        p for _, p in named if any(fnmatch.fnmatchcase(a, case.trace_params) for a in every[id(p)])
    ]
    loss = case.reference_loss(model)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    rows = [
        torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat[i], params, retain_graph=True)])
        for i in range(flat.numel())
    ]
    return torch.stack(rows).detach().numpy()


def weight_norm(model: nn.Module) -> float:
    return float(
        torch.cat([p.detach().double().reshape(-1) for _, p in unique_parameters(model)]).norm()
    )


ALL: dict[str, Callable[[], Case]] = {
    "bert": bert,
    "gpt2": gpt2,
    "vit": vit,
    "resnet-eval": lambda: resnet("eval"),
    "resnet-train": lambda: resnet("train"),
    "lstm": lstm,
    "tied-lm": tied_lm,
    "bn-cnn-train": lambda: bn_cnn("train"),
}
