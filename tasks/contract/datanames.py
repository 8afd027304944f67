"""Which arrays of a dataset file are the model's inputs and which are the targets.

One rule for the gateway (at upload and at submission) and the worker (when a job runs), so a
job never reaches a worker with names the gateway did not check. Torch-free.

A dataset reference names its arrays with `inputs_key` and `targets_key`:
- `inputs_key`: one array name (the model's single input); a list of names (positional inputs,
  in order); or a mapping from the model's keyword to an array name
  (`{"input_ids": "ids", "attention_mask": "mask"}`).
- Left out, the names stored with the uploaded dataset apply (given or recognised at upload);
  failing that, common names are recognised when exactly one pair fits: inputs/targets, x/y,
  X/y, X/Y, data/labels, data/targets, images/labels, features/labels, input_ids/labels,
  pixel_values/labels, and `label` (singular, as Hugging Face datasets name it) wherever
  `labels` is recognised. With `input_ids`, the Hugging Face companions present in the file
  (attention_mask, token_type_ids, position_ids, decoder_input_ids, decoder_attention_mask)
  are passed by keyword too.

Every refusal names the arrays found and the exact fix for curl (`-F inputs_key=`), the CLI
(`--inputs-key`) and the SDK (`inputs_key=`).
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
    ("pixel_values", "labels"),
    # Hugging Face datasets name a classifier's targets `label`
    ("inputs", "label"),
    ("data", "label"),
    ("images", "label"),
    ("image", "label"),
    ("img", "label"),
    ("features", "label"),
    ("input_ids", "label"),
    ("pixel_values", "label"),
)

#: Arrays passed by keyword beside input_ids when the file holds them.
HF_COMPANIONS = (
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "decoder_input_ids",
    "decoder_attention_mask",
)

#: Arrays passed by keyword beside an input when the file holds them, by that input.
COMPANIONS: dict[str, tuple[str, ...]] = {"input_ids": HF_COMPANIONS}

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


def how_to_name(inputs: str = "NAME", targets: str = "NAME") -> str:
    """The exact fix for naming the arrays, for curl, the CLI and the SDK."""
    return (
        f"say which arrays are which: curl -F inputs_key={inputs} -F targets_key={targets}; "
        f"CLI --inputs-key {inputs} --targets-key {targets}; SDK inputs_key={inputs!r}, "
        f"targets_key={targets!r} (datasets.upload, DatasetRef or measure). Several inputs: "
        'JSON, e.g. {"input_ids": "input_ids", "attention_mask": "attention_mask"}'
    )


def _stored_note(applied: dict[str, Any]) -> str:
    if not applied:
        return ""
    names = ", ".join(f"{k}={json.dumps(v)}" for k, v in applied.items())
    return f"; the names stored with the upload were applied ({names}): give others to override"


def resolve(
    arrays: Collection[str],
    inputs_key: InputsKey | None,
    targets_key: str | None,
    stored: Mapping[str, Any] | None = None,
) -> tuple[InputsKey, str]:
    """(inputs_key, targets_key) for a file holding `arrays`.

    Given names win; then the names stored with the upload (`stored`); then the common pairs.
    Raises NamesError naming the part at fault, listing the arrays found and the fix (saying
    when stored names were applied)."""
    stored = stored or {}
    applied: dict[str, Any] = {}
    if inputs_key is None and stored.get("inputs_key") is not None:
        inputs_key = applied["inputs_key"] = stored["inputs_key"]
    if targets_key is None and stored.get("targets_key") is not None:
        targets_key = applied["targets_key"] = stored["targets_key"]
    found = ", ".join(sorted(arrays)) or "none"
    note = _stored_note(applied)
    try:
        if inputs_key is None or targets_key is None:
            inputs_key, targets_key = _recognise(arrays, inputs_key, targets_key, found)
        for name in input_names(inputs_key):
            if name not in arrays:
                raise NamesError("inputs_key", f"no array {name!r} (arrays: {found})")
        if targets_key not in arrays:
            raise NamesError("targets_key", f"no array {targets_key!r} (arrays: {found})")
        if targets_key in input_names(inputs_key):
            raise NamesError("targets_key", f"array {targets_key!r} cannot be inputs and targets")
    except NamesError as e:
        if note:
            raise NamesError(e.part, e.detail + note) from None
        raise
    return inputs_key, targets_key


def unused_arrays(arrays: Collection[str], inputs_key: InputsKey, targets_key: str) -> list[str]:
    """The arrays of the file that the names leave out (neither an input nor the targets)."""
    used = {*input_names(inputs_key), targets_key}
    return sorted(a for a in arrays if a not in used)


def _with_companions(inputs: InputsKey, targets: str, arrays: Collection[str]) -> InputsKey:
    if not isinstance(inputs, str):
        return inputs
    companions = [c for c in COMPANIONS.get(inputs, ()) if c in arrays and c != targets]
    if companions:
        return {inputs: inputs, **{c: c for c in companions}}
    return inputs


def _guess(arrays: Collection[str], exclude: Collection[str]) -> str:
    rest = [a for a in sorted(arrays) if a not in exclude]
    return rest[0] if len(rest) == 1 else "NAME"


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
        return _with_companions(inputs, targets, arrays), targets
    if not fits and inputs_key is None and targets_key is None:
        targets_seen = [t for t in dict.fromkeys(t for _, t in COMMON_PAIRS) if t in arrays]
        inputs_seen = [i for i in dict.fromkeys(i for i, _ in COMMON_PAIRS) if i in arrays]
        if len(targets_seen) == 1 and not inputs_seen:
            t = targets_seen[0]
            i = _guess(arrays, [t])
            raise NamesError(
                "inputs_key",
                f"found the targets {t!r} but no array with a name recognised as the model's "
                f"inputs ({', '.join(repr(i) for i in dict.fromkeys(i for i, _ in COMMON_PAIRS))})"
                f" (arrays: {found}); {how_to_name(i, t)}",
            )
        if len(inputs_seen) == 1 and not targets_seen:
            i = inputs_seen[0]
            raise NamesError(
                "targets_key",
                f"found the inputs {i!r} but no array with a name recognised as the targets "
                f"({', '.join(repr(t) for t in dict.fromkeys(t for _, t in COMMON_PAIRS))}) "
                f"(arrays: {found}); {how_to_name(i, _guess(arrays, [i]))}",
            )
    why = (
        "several common pairs of names fit ("
        + ", ".join(f"{input_names(i)[0]}/{t}" for i, t in fits)
        + ")"
        if fits
        else "no common pair of names fits"
    )
    if fits:
        i, t = fits[0]
        i_name, t_name = (i if isinstance(i, str) else "NAME"), t
    else:
        i_name = inputs_key if isinstance(inputs_key, str) else "NAME"
        t_name = targets_key or "NAME"
    raise NamesError(
        "inputs_key" if inputs_key is None else "targets_key",
        f"{why} (arrays: {found}); {how_to_name(i_name, t_name)}",
    )
