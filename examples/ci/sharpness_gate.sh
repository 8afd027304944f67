#!/usr/bin/env bash
# The example CI pipeline (examples/ci/sharpness-gate.yml runs it): train, upload and measure,
# log to MLflow, and fail the step on a sharpness regression.
#
# Locally, against `make run` in another terminal (it writes var/gateway.url):
#     examples/ci/sharpness_gate.sh
#     SHARPNESS_BASELINE=<job id> examples/ci/sharpness_gate.sh   # also gate on the increase
#
# Settings (environment):
#   SHARPNESS_URL        the service (default: var/gateway.url of `make run`, else :8000)
#   SHARPNESS_API_KEY    its bearer key, when it has one
#   SHARPNESS_BASELINE   a job id to compare with (e.g. the main branch's last job); none:
#                        only the absolute limit applies
#   MAX_LAMBDA           the absolute limit on λmax (default 200)
#   MAX_INCREASE         the allowed increase over the baseline (default 20%)
#   MLFLOW_TRACKING_URI  the MLflow store (default: a file store under OUT)
#   OUT                  where the model, the data and job.json go (default build/sharpness)
#   PYTHON               the Python that trains (default python3); TRAIN_ARGS: its options
#
# Exit codes are the `sharpness` command's: 0 passed, 6 the gate failed (the last line of
# stderr says which limit, by how much), 1 the job failed, 3 or 4 the service refused or was
# not reached, 5 a measure did not converge within its budget.
set -euo pipefail

OUT=${OUT:-build/sharpness}
PYTHON=${PYTHON:-python3}
if [[ -z "${SHARPNESS_URL:-}" && -f "${SHARPNESS_DATA_DIR:-var}/gateway.url" ]]; then
  SHARPNESS_URL=$(cat "${SHARPNESS_DATA_DIR:-var}/gateway.url")
fi
export SHARPNESS_URL=${SHARPNESS_URL:-http://127.0.0.1:8000}
if [[ -z "${MLFLOW_TRACKING_URI:-}" ]]; then
  mkdir -p "$OUT/mlruns"
  export MLFLOW_TRACKING_URI="file://$(cd "$OUT/mlruns" && pwd)"
  export MLFLOW_ALLOW_FILE_STORE=true  # MLflow 3 keeps the file store for local use only
fi
export MLFLOW_EXPERIMENT_NAME=${MLFLOW_EXPERIMENT_NAME:-sharpness-gate}

# 1. train (a pipeline's own training step goes here)
# shellcheck disable=SC2086  # TRAIN_ARGS holds several options
"$PYTHON" -m examples.ci.train_digits --out "$OUT" ${TRAIN_ARGS:-}

# 2. upload, measure, log to MLflow and gate, in one command
gate=(--fail-above "lambda_max=${MAX_LAMBDA:-200}")
if [[ -n "${SHARPNESS_BASELINE:-}" ]]; then
  gate+=(--baseline "$SHARPNESS_BASELINE" --max-increase "lambda_max=${MAX_INCREASE:-20%}")
fi
status=0
sharpness measure "$OUT/model.pt2" --data "$OUT/data.npz" \
  --measure lambda_max --measure trace --param trace.num_hvps=100 \
  --label "commit=${GITHUB_SHA:-local}" --timeout "${SHARPNESS_TIMEOUT:-600}" \
  --mlflow "${gate[@]}" --json >"$OUT/job.json" || status=$?

# 3. the job id for the next run's baseline (a pipeline keeps it, e.g. as an artifact)
if [[ -s "$OUT/job.json" ]]; then
  "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT/job.json" \
    >"$OUT/job_id"
  echo "sharpness job: $(cat "$OUT/job_id") (in $OUT/job.json)" >&2
fi
exit "$status"
