"""Train or eval behaviour of a torch.export program, read from and written into its graph.

An exported module refuses `.train()` and `.eval()`: the behaviour of BatchNorm and dropout
is baked into the graph as an argument of each call (`aten.batch_norm(..., training, ...)`,
`aten.dropout(x, p, train)`). So the mode is a fact of the graph, not of the module:
- `graph_mode` reads it: "train" (batch statistics / active dropout), "eval", "mixed", or None
  when the graph holds nothing whose behaviour depends on the mode.
- `apply_mode` rewrites those arguments to the requested mode and recompiles, where every such
  call carries its mode as an argument. Calls whose mode is their identity
  (`_native_batch_norm_legit_no_training`, ...) cannot be switched; the graph then keeps what
  it has and the caller reports that.
- `has_dropout` says whether the graph holds a dropout call that draws a mask (train flag on,
  p > 0); the problem seeds those draws (tasks.engine.problem).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

#: the mode a graph is written in; "mixed" when its calls disagree
Mode = Literal["train", "eval"]
GraphMode = Literal["train", "eval", "mixed"]

_aten = torch.ops.aten

#: call → position of its boolean "use batch statistics / dropout active" argument.
_SWITCHABLE: dict[object, tuple[int, str]] = {
    _aten.batch_norm.default: (5, "training"),
    _aten.native_batch_norm.default: (5, "training"),
    _aten._native_batch_norm_legit.default: (5, "training"),
    _aten.dropout.default: (2, "train"),
    _aten.feature_dropout.default: (2, "train"),
    _aten.alpha_dropout.default: (2, "train"),
    _aten.feature_alpha_dropout.default: (2, "train"),
    _aten.native_dropout.default: (2, "train"),
}

#: dropout calls: (p, train) are their arguments 1 and 2.
_DROPOUT = (
    _aten.dropout.default,
    _aten.feature_dropout.default,
    _aten.alpha_dropout.default,
    _aten.feature_alpha_dropout.default,
    _aten.native_dropout.default,
)

#: calls whose mode cannot be switched by an argument.
_FIXED: dict[object, Mode] = {
    _aten._native_batch_norm_legit_no_training.default: "eval",
    _aten._native_batch_norm_legit_functional.default: "train",
}


def _graph_modules(module: nn.Module) -> list[torch.fx.GraphModule]:
    return [m for m in module.modules() if isinstance(m, torch.fx.GraphModule)]


def _flag(node: torch.fx.Node, index: int, name: str) -> bool | None:
    if len(node.args) > index:
        value = node.args[index]
    else:
        value = node.kwargs.get(name)
    return value if isinstance(value, bool) else None


def graph_mode(module: nn.Module) -> GraphMode | None:
    """The mode the exported graph computes in (None: nothing in it depends on the mode)."""
    seen: set[Mode] = set()
    for gm in _graph_modules(module):
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            if node.target in _FIXED:
                seen.add(_FIXED[node.target])
            elif node.target in _SWITCHABLE:
                flag = _flag(node, *_SWITCHABLE[node.target])
                if flag is not None:
                    seen.add("train" if flag else "eval")
    if not seen:
        return None
    return seen.pop() if len(seen) == 1 else "mixed"


def apply_mode(module: nn.Module, mode: Mode) -> GraphMode | None:
    """Rewrite the graph's mode arguments to `mode`; returns the mode the graph then has."""
    want = mode == "train"
    for gm in _graph_modules(module):
        changed = False
        for node in gm.graph.nodes:
            if node.op != "call_function" or node.target not in _SWITCHABLE:
                continue
            index, name = _SWITCHABLE[node.target]
            flag = _flag(node, index, name)
            if flag is None or flag == want:
                continue
            if len(node.args) > index:
                node.args = (*node.args[:index], want, *node.args[index + 1 :])
            else:
                node.kwargs = {**node.kwargs, name: want}
            changed = True
        if changed:
            gm.recompile()
    return graph_mode(module)


def has_dropout(module: nn.Module) -> bool:
    """Whether the exported graph drops anything: a dropout call in train mode with p > 0."""
    for gm in _graph_modules(module):
        for node in gm.graph.nodes:
            if node.op != "call_function" or node.target not in _DROPOUT:
                continue
            p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p")
            if _flag(node, 2, "train") and not (isinstance(p, (int, float)) and p == 0):
                return True
    return False
