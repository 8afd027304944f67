"""The loss layouts against torch's own losses written out by hand, and the refusals."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tasks.engine.losses import LayoutError, Objective, label_range_problem

g = torch.Generator().manual_seed(0)


def test_classes_last_and_on_dim_1_are_the_token_mean() -> None:
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)  # (N, T, C)
    labels = torch.randint(0, 7, (3, 5), generator=g)
    labels[0, 3:] = -100
    counted = labels != -100
    by_hand = -logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    expected = by_hand[counted].mean()
    last = Objective("cross_entropy")
    assert last(logits, labels) == pytest.approx(float(expected), rel=1e-12)
    assert last.resolved_dim == -1 and last.count(labels) == int(counted.sum())
    first = Objective("cross_entropy")
    assert first(logits.transpose(1, 2), labels) == pytest.approx(float(expected), rel=1e-12)
    assert first.resolved_dim == 1
    correct = int(((logits.argmax(-1) == labels) & counted).sum())
    assert last.correct(logits, labels) == correct


def test_ambiguous_layout_is_refused_until_class_dim_says() -> None:
    logits = torch.randn(2, 4, 4, generator=g)  # C = T = 4: both layouts fit
    labels = torch.randint(0, 4, (2, 4), generator=g)
    with pytest.raises(LayoutError, match="set class_dim"):
        Objective("cross_entropy")(logits, labels)
    explicit = Objective("cross_entropy", class_dim=1)(logits, labels)
    assert explicit == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    with pytest.raises(LayoutError, match="fit no layout"):
        Objective("cross_entropy")(torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(LayoutError, match="use loss 'mse'"):
        Objective("cross_entropy")(torch.randn(6), torch.zeros(6, dtype=torch.long))


def test_soft_labels_and_mse_on_sequences() -> None:
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), -1)
    soft = Objective("cross_entropy")
    assert soft(logits, probs) == pytest.approx(float(F.cross_entropy(logits, probs)), rel=1e-12)
    assert soft.count(probs) == 4
    out = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    target = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    mse = Objective("mse")
    assert mse(out, target) == pytest.approx(float(F.mse_loss(out, target)), rel=1e-12)
    assert mse.count(target) == 30


def test_batches_weighted_by_counted_targets_give_the_one_batch_mean() -> None:
    logits = torch.randn(6, 4, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (6, 4), generator=g)
    labels[:2, 1:] = -100  # the first batch is mostly padding
    whole = Objective("cross_entropy")(logits, labels)
    objective = Objective("cross_entropy")
    parts = [(logits[:2], labels[:2]), (logits[2:], labels[2:])]
    counts = [objective.count(y) for _, y in parts]
    weighted = sum(
        c / sum(counts) * objective(o, y) for (o, y), c in zip(parts, counts, strict=True)
    )
    assert weighted == pytest.approx(float(whole), rel=1e-12)
    naive = sum(len(y) / 6 * objective(o, y) for o, y in parts)  # by examples: wrong
    assert abs(float(naive) - float(whole)) > 1e-3


def test_label_range() -> None:
    objective = Objective("cross_entropy")
    out = torch.randn(2, 3)
    assert label_range_problem(objective, 3, torch.tensor([0, 2, -100])) is None
    assert "model has 3 classes" in label_range_problem(objective, 3, torch.tensor([3, 0]))
    assert "negative label -1" in label_range_problem(objective, 3, torch.tensor([-1, 0]))
    assert objective.num_classes(out, torch.tensor([0, 1])) == 3
