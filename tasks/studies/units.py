"""A study's units: member jobs on one uploaded model are one model (their values averaged),
so a duplicate neither counts twice nor sits in its own leave-one-out training fold; models
declared in one `group` (seeds), or sharing a model, are held out and resampled together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tasks.studies.results import MemberData


@dataclass
class Units:
    """The study's models: member jobs on one uploaded model merged into one unit."""

    units: list[MemberData]
    of_member: dict[int, int]  # member index → unit index
    members_of: list[list[int]]  # unit index → member indices
    groups: np.ndarray  # unit index → label of the group held out together
    duplicates: list[list[str]]
    warnings: list[str]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _merge(group: list[MemberData]) -> MemberData:
    """One unit from the member jobs on one model: the mean of each value they carry."""
    first = group[0]
    if len(group) == 1:
        return first
    observed = [m for m in group if m.state == "observed"]
    names = {k for m in group for k in m.measures}
    bnames = {k for m in group for k in m.baselines}
    ses = [m.noise_se for m in observed if m.noise_se is not None]
    sizes = [m.test_examples for m in observed if m.test_examples is not None]
    return replace(
        first,
        state="observed" if observed else first.state,
        gap=_mean([m.gap for m in observed if m.gap is not None]),
        gap_source=observed[0].gap_source if observed else first.gap_source,
        measures={
            k: v
            for k in names
            if (v := _mean([m.measures[k] for m in group if k in m.measures])) is not None
        },
        baselines={
            k: _mean([v for m in group if (v := m.baselines.get(k)) is not None]) for k in bnames
        },
        group=next((m.group for m in group if m.group is not None), None),
        noise_se=max(ses) if ses else None,
        test_examples=min(sizes) if sizes else None,
    )


def merge_units(members: list[MemberData]) -> Units:
    """Merge the succeeded member jobs by model id; group the units by declared group (two
    groups that share a model become one)."""
    keys: dict[object, list[int]] = {}
    for i, m in enumerate(members):
        if m.state not in ("observed", "to_predict"):
            continue
        keys.setdefault(m.model if m.model is not None else ("job", i), []).append(i)
    units: list[MemberData] = []
    members_of: list[list[int]] = []
    of_member: dict[int, int] = {}
    duplicates: list[list[str]] = []
    warnings: list[str] = []
    for idx in keys.values():
        group = [members[i] for i in idx]
        if len(idx) > 1:
            duplicates.append([m.job for m in group])
            if any(m.hyperparameters != group[0].hyperparameters for m in group):
                warnings.append(
                    f"jobs {', '.join(m.job for m in group)} are on the same model but declare "
                    f"different hyperparameters; those of {group[0].job} are used"
                )
        for i in idx:
            of_member[i] = len(units)
        members_of.append(idx)
        units.append(_merge(group))
    # union-find over units: one declared group label, or one model, is one held-out group
    parent = list(range(len(units)))

    def find(u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    seen: dict[str, int] = {}
    for u, idx in enumerate(members_of):
        for i in idx:
            label = members[i].group
            if label is None:
                continue
            if label in seen:
                parent[find(u)] = find(seen[label])
            else:
                seen[label] = u
    groups = np.array([find(u) for u in range(len(units))], dtype=int)
    return Units(units, of_member, members_of, groups, duplicates, warnings)
