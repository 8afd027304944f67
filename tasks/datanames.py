"""Which arrays of a dataset file are the model's inputs and which are the targets.

One rule for the gateway (at upload and at submission) and the worker (when a job runs), so a
job never reaches a worker with names the gateway did not check. Torch-free.

A dataset reference names its arrays with `inputs_key` and `targets_key`:
- `inputs_key`: one array name (the model's single input); a list of names (positional inputs,
  in order); or a mapping from the model's keyword to an array name
  (`{"input_ids": "ids", "attention_mask": "mask"}`).
- Left out, the names stored with the uploaded dataset apply (given or recognised at upload);
  failing that, common names are recognised when exactly one pair fits: inputs/targets, x/y,
  X/y, X/Y, data/labels, data/targets, images/labels, features/labels, input_ids/labels. With
  `input_ids`, the Hugging Face companions present in the file (attention_mask, token_type_ids,
  position_ids) are passed by keyword too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

InputsKey = str | list[str] | dict[str, str]

#: (inputs, targets) pairs recognised when a reference names neither.
COMMON_PAIRS: tuple[tuple[str, str], ...] = (
    ("inputs", "targets"),
    ("x", "y"),
    ("X", "y"),
    ("X", "Y"),
    ("data", "labels"),
    ("data", "targets"),
    ("images", "labels"),
    ("features", "labels"),
    ("input_ids", "labels"),
)

#: Arrays passed by keyword beside input_ids when the file holds them.
HF_COMPANIONS = ("attention_mask", "token_type_ids", "position_ids")

ARRAY_NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")
KEYWORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_INPUTS = 16


class NamesError(ValueError):
    """The names do not pick arrays of the file; `part` is inputs_key or targets_key."""

    def __init__(self, part: str, detail: str) -> None:
        super().__init__(detail)
        self.part = part
        self.detail = detail


def validate_inputs_key(value: Any) -> InputsKey:
    """Check the shape of an inputs_key (one name, a list, or keyword → name)."""
    if isinstance(value, str):
        _check_name(value)
        return value
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_INPUTS:
            raise ValueError(f"give 1 to {MAX_INPUTS} array names")
        for v in value:
            _check_name(v)
        return list(value)
    if isinstance(value, Mapping):
        if not 1 <= len(value) <= MAX_INPUTS:
            raise ValueError(f"give 1 to {MAX_INPUTS} keyword: array pairs")
        for k, v in value.items():
            if not isinstance(k, str) or not KEYWORD.match(k):
                raise ValueError(f"{k!r} is not a Python keyword argument name")
            _check_name(v)
        return dict(value)
    raise ValueError("give an array name, a list of names, or a mapping keyword → name")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not ARRAY_NAME.match(name):
        raise ValueError(f"{name!r}: an array name is letters, digits and _ . - / (≤ 128)")


def parse_form_inputs_key(text: str) -> InputsKey:
    """An inputs_key from a form field: a name, or JSON for a list or a mapping."""
    text = text.strip()
    if text[:1] in "[{":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON ({e.msg})") from None
        return validate_inputs_key(value)
    return validate_inputs_key(text)


def input_names(inputs_key: InputsKey) -> list[str]:
    """The array names an inputs_key uses, in order."""
    if isinstance(inputs_key, str):
        return [inputs_key]
    if isinstance(inputs_key, Mapping):
        return list(inputs_key.values())
    return list(inputs_key)


def resolve(
    arrays: Collection[str],
    inputs_key: InputsKey | None,
    targets_key: str | None,
    stored: Mapping[str, Any] | None = None,
) -> tuple[InputsKey, str]:
    """(inputs_key, targets_key) for a file holding `arrays`.

    Given names win; then the names stored with the upload (`stored`); then the common pairs.
    Raises NamesError naming the part at fault and listing the arrays found."""
    stored = stored or {}
    if inputs_key is None and stored.get("inputs_key") is not None:
        inputs_key = stored["inputs_key"]
    if targets_key is None and stored.get("targets_key") is not None:
        targets_key = stored["targets_key"]
    found = ", ".join(sorted(arrays)) or "none"
    if inputs_key is None or targets_key is None:
        inputs_key, targets_key = _recognise(arrays, inputs_key, targets_key, found)
    for name in input_names(inputs_key):
        if name not in arrays:
            raise NamesError("inputs_key", f"no array {name!r} (arrays: {found})")
    if targets_key not in arrays:
        raise NamesError("targets_key", f"no array {targets_key!r} (arrays: {found})")
    if targets_key in input_names(inputs_key):
        raise NamesError("targets_key", f"array {targets_key!r} cannot be inputs and targets")
    return inputs_key, targets_key


def _recognise(
    arrays: Collection[str], inputs_key: InputsKey | None, targets_key: str | None, found: str
) -> tuple[InputsKey, str]:
    fits = [
        (i, t)
        for i, t in COMMON_PAIRS
        if i in arrays
        and t in arrays
        and (inputs_key is None or input_names(inputs_key) == [i])
        and (targets_key is None or targets_key == t)
    ]
    if inputs_key is not None and targets_key is None:
        rest = [t for _, t in COMMON_PAIRS if t in arrays and t not in input_names(inputs_key)]
        fits = [(inputs_key, t) for t in dict.fromkeys(rest)]  # type: ignore[misc]
    elif targets_key is not None and inputs_key is None:
        rest = [i for i, _ in COMMON_PAIRS if i in arrays and i != targets_key]
        fits = [(i, targets_key) for i in dict.fromkeys(rest)]
    if len(fits) == 1:
        inputs, targets = fits[0]
        if inputs == "input_ids":
            companions = [c for c in HF_COMPANIONS if c in arrays and c != targets]
            if companions:
                inputs = {"input_ids": "input_ids", **{c: c for c in companions}}
        return inputs, targets
    if not fits and inputs_key is None and targets_key is None:
        halves = [(i, t) for i, t in COMMON_PAIRS if (i in arrays) != (t in arrays)]
        if halves:
            i, t = halves[0]
            have, lack, part = (i, t, "targets_key") if i in arrays else (t, i, "inputs_key")
            raise NamesError(
                part,
                f"found {have!r} but no {lack!r} beside it (arrays: {found}); name the "
                f"array {lack!r} or give {part}",
            )
    missing = " and ".join(
        part for part, v in (("inputs_key", inputs_key), ("targets_key", targets_key)) if v is None
    )
    why = "several common pairs fit" if fits else "no common pair of names fits"
    raise NamesError(
        "inputs_key" if inputs_key is None else "targets_key",
        f"{why} (arrays: {found}); give {missing} to say which arrays are the model's inputs "
        "and the targets",
    )
