"""The one problem vocabulary: every `type` the gateway answers with and a worker records.

A problem (RFC 9457) says what went wrong in `type`, a URI that clients branch on instead of
on the wording of `detail`. Ours are URNs, `urn:sharpness:problem:<slug>`: names that no one
is expected to dereference (RFC 9457 §3.1.1 lets a type be a non-resolvable URI; an https URL
would promise a page that the service does not serve). The gateway's answers and the `error`
of a failed job or trajectory use the same names; `about:blank` is left to what the HTTP
status alone says (an unknown route, a method not allowed).

Torch-free: the gateway, the worker and the tests import it. The SDK keeps a copy of the slugs
(sharpness_client.errors.PROBLEM_KINDS) that a test compares with this table, and another test
checks that every slug the code raises is defined here and every one defined here is raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMESPACE = "urn:sharpness:problem:"
# Records written before the vocabulary was one carry the worker's old https prefix, whose
# path ended in /problems/<slug>; only the slug is read from them.
_FORMER = re.compile(r"^https://[^/]+/problems/(?P<slug>[a-z0-9-]+)$")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int  # the status it is answered (or recorded) with
    meaning: str  # when it happens, for the documentation

    @property
    def uri(self) -> str:
        return NAMESPACE + self.slug


def _t(slug: str, status: int, meaning: str) -> ProblemType:
    return ProblemType(slug, status, meaning)


GATEWAY = (
    _t("validation", 422, "The request does not match the schema; `errors` lists every field."),
    _t("invalid-field", 422, "A field passed the schema but not a check of its value."),
    _t("unknown", 422, "A field names a model or dataset that was never uploaded."),
    _t(
        "uri-rejected", 422, "A dataset or model URI is refused (scheme, host or path not allowed)."
    ),
    _t("bad-dataset", 422, "The file behind a dataset URI is not a usable dataset."),
    _t("missing-array", 422, "A dataset lacks the inputs or targets array named."),
    _t("unauthorized", 401, "No or a wrong API key (`Authorization: Bearer <key>`)."),
    _t(
        "forbidden", 403, "The caller's role may not do this (ops uploads nothing, users no queue)."
    ),
    _t(
        "rate-limited",
        429,
        "Past the tenant's max_requests_per_minute; retry after Retry-After.",
    ),
    _t("quota-active-runs", 429, "Past the tenant's max_active_runs (queued + running records)."),
    _t("quota-storage", 429, "An upload past the tenant's max_storage_bytes."),
    _t("not-found", 404, "No model, dataset, job, trajectory or study with this id."),
    _t("no-result", 404, "The record exists but has no result to draw."),
    _t("not-finished", 409, "The record is still queued or running; retry after Retry-After."),
    _t("not-analysed", 409, "The study has too few observed members for an analysis yet."),
    _t("already-finished", 409, "Cancelling a record that already succeeded or failed."),
    _t("idempotency-key-reused", 409, "An Idempotency-Key reused with a different body."),
    _t("conflict", 409, "Model bytes stored before with another architecture, config or head."),
    _t(
        "in-use",
        409,
        "Deleting a model or dataset a queued or running run uses; `?force=true` deletes it.",
    ),
    _t("too-large", 413, "The upload is larger than SHARPNESS_MAX_UPLOAD_BYTES."),
    _t("bad-multipart", 400, "The multipart body cannot be parsed."),
    _t("truncated-upload", 400, "The upload ended before its declared length."),
    _t("not-multipart", 415, "An upload that is not multipart/form-data."),
    _t("enqueue-failed", 503, "The broker refused the message; the record is marked failed."),
    _t("redis-unavailable", 503, "The job store (Redis) did not answer; retry after Retry-After."),
    _t("not-ready", 503, "/readyz: a readiness check failed (Redis, workers)."),
    _t("internal", 500, "A bug; the gateway log has the traceback."),
)

UPLOADS = (
    _t("unknown-format", 415, "The bytes are no format the service takes."),
    _t("pickle", 415, "A pickle: never unpickled; export the model instead."),
    _t("torch-save", 415, "A torch.save file of a module or state_dict; export it instead."),
    _t(
        "unsafe-archive",
        415,
        "A model archive holding pickled objects or code, or a zip member that points outside it.",
    ),
    _t("dataset-not-model", 415, "A dataset uploaded as a model."),
    _t("pickled-array", 415, "An .npy/.npz array of Python objects (a pickle)."),
    _t("remote-code", 415, "A Hugging Face checkpoint that ships code or pickled weights."),
    _t("corrupt", 422, "An accepted format whose content is broken."),
    _t("corrupt-zip", 422, "A zip archive that cannot be read or names a member twice."),
    _t("zip-too-large", 422, "A zip archive that unpacks past the size limit."),
    _t("truncated", 422, "A file or member shorter than its own header says."),
    _t("empty", 422, "An empty file."),
    _t("not-npz", 422, "A .npz that is not a zip of .npy arrays."),
    _t("not-npy", 422, "An array whose .npy header is broken."),
    _t("bad-shape", 422, "An array without an examples dimension (a scalar)."),
    _t("length-mismatch", 422, "Inputs and targets of different lengths."),
    _t("unsupported-dtype", 422, "An array of a dtype the service does not read."),
    _t("static-batch", 422, "A torch.export program whose batch size was fixed at export."),
    _t("missing-config", 422, "A Hugging Face checkpoint without config.json."),
    _t("missing-model-type", 422, "A config.json without `model_type`."),
    _t("missing-weights", 422, "A Hugging Face checkpoint without safetensors weights."),
    _t("missing-shard", 422, "A sharded checkpoint whose index names a missing shard."),
    _t("ambiguous-checkpoint", 422, "A zip holding more than one checkpoint folder."),
    _t("missing-head", 422, "A config naming no head the service can build; pass `head`."),
    _t("bad-head", 422, "A `head` the service does not know."),
)

WORKER = (
    _t("invalid-input", 422, "The worker cannot use the model or data (a failed record)."),
    _t("checkpoint-mismatch", 422, "Trajectory checkpoints with different parameters."),
    _t("device-unavailable", 503, "The job asks for CUDA, or more GPUs than its worker has."),
    _t("time-limit", 500, "The run passed the soft or hard time limit."),
    _t("worker-lost", 500, "The run's worker stopped beating and its attempts are spent."),
    _t("out-of-memory", 500, "The run ran out of host or device memory."),
    _t("not-implemented", 501, "A measure this worker does not implement."),
    _t("job-failed", 500, "Any other error while running; `detail` says where."),
)

TYPES: dict[str, ProblemType] = {t.slug: t for t in GATEWAY + UPLOADS + WORKER}


def uri(slug: str) -> str:
    """The `type` of a problem of this kind.

    A well-formed slug that is missing from TYPES still gives a URI, so that building an
    error never fails; tests/test_problem_types.py finds every slug in the code and fails
    until it is defined here."""
    if not _SLUG.match(slug):
        raise ValueError(f"problem slug {slug!r}: use lowercase words joined by '-'")
    return NAMESPACE + slug


def slug_of(type_uri: str) -> str | None:
    """The slug of one of our problem types (also the former worker prefix), else None."""
    if type_uri.startswith(NAMESPACE):
        return type_uri[len(NAMESPACE) :]
    former = _FORMER.match(type_uri)
    return former.group("slug") if former else None


def current(type_uri: str) -> str:
    """A type as this vocabulary spells it (a record written under the former prefix)."""
    slug = slug_of(type_uri)
    return uri(slug) if slug and _SLUG.match(slug) else type_uri
