"""deploy/: the Prometheus alert rules, the scrape config, the Grafana dashboard and the
compose profile that wires them, checked against the gateway's real /metrics.

A gateway on the suite's private Redis gets jobs submitted, run, failed, cancelled and a
worker heartbeat; then every metric name (and label) that a rule or a dashboard query uses
must appear in what its /metrics answers. The rules file's structure is checked here in
Python; with `promtool` on PATH also `promtool check rules/config`, the unit tests in
deploy/prometheus/alerts_test.yml, and the dashboard's queries parsed as PromQL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from tasks.contract.spec import JobStatus, Problem
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis
from tasks.store.records import JobStore
from tests import databases
from tests.api import files

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "sharpness-dashboard.json"
COMPOSE = ROOT / "docker-compose.yml"
DB = databases.DEPLOY_RULES
PROMTOOL = shutil.which("promtool")

# Series Prometheus makes itself for every scrape target (not in any /metrics): allowed.
PROMETHEUS_OWN = {"up"}

# ------------------------------------------------------------------ PromQL names
FUNCTION_OR_KEYWORD = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}  # fmt: skip
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
SELECTOR = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
GRAFANA_VAR = re.compile(r"\$(\{[^}]*\}|__\w+|\w+)")


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return GRAFANA_VAR.sub(".*", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges, grouping label lists and function calls are taken out."""
    text = STRING.sub('""', grafana_to_promql(expr))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    names = set()
    for m in IDENT.finditer(text):
        name = m.group(1)
        following = text[m.end() :].lstrip()
        if following.startswith("(") or name.lower() in FUNCTION_OR_KEYWORD:
            continue  # a function or aggregation, or an operator keyword
        names.add(name)
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    """metric name → label names its `{...}` matchers use."""
    out: dict[str, set[str]] = {}
    for m in SELECTOR.finditer(STRING.sub('""', grafana_to_promql(expr))):
        keys = {key for key, _ in MATCHER.findall(m.group(2))}
        out.setdefault(m.group(1), set()).update(keys)
    return out


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{outcome="x y",queue=~"$queue"}'
        "[$__rate_interval]))) / on () group_left sum without (instance) (b) > bool 0.2 "
        "and c_total offset 5m unless absent(d)"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "d"}
    assert selector_labels(expr) == {"a_bucket": {"outcome", "queue"}}


# ------------------------------------------------------------------ what deploy/ uses
def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, f"template variable {var['name']}: {query}"
            exprs.append(f'{m.group(1)}{{{m.group(2)}!=""}}')
    return exprs


def used_expressions() -> list[str]:
    return [r["expr"] for r in alert_rules()] + dashboard_queries()


# ------------------------------------------------------------------ the real /metrics
@pytest.fixture(scope="module")
def scraped(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, set[str]]:
    """Sample name → label names, from a gateway's /metrics after runs of every outcome."""
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    tmp = tmp_path_factory.mktemp("deploy-metrics")
    settings = Settings(redis_url=url, data_dir=tmp / "var", data_root=tmp, uri_schemes=["file"])
    with TestClient(create_app(settings)) as client:
        model = client.post("/v1/models", files={"file": ("m.pt2", files.pt2_bytes(tmp))})
        data = client.post("/v1/datasets", files={"file": ("d.npz", files.npz_bytes())})
        assert model.status_code in (200, 201) and data.status_code in (200, 201)

        def submit(device: str) -> str:
            spec = {
                "model": model.json()["id"],
                "dataset": {"id": data.json()["id"]},
                "measures": [{"name": "lambda_max"}],
                "device": device,
            }
            r = client.post("/v1/jobs", json=spec)
            assert r.status_code == 202, r.text
            return r.json()["id"]

        store = JobStore.from_url(url)
        store.heartbeat("deploy-worker@test", "cpu")
        for status in (JobStatus.succeeded, JobStatus.failed):
            job = submit("cpu")
            store.mark_running(job, "deploy-worker@test", "cpu", {})
            error = Problem(type="about:blank", title="x", status=500, detail="x")
            store.finish(job, status, results={}, error=error if status.value == "failed" else None)
        cancelled = submit("cuda")
        assert client.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200
        store.mark_running(submit("cpu"), "deploy-worker@test", "cpu", {})
        submit("cuda")  # waits: no worker consumes gpu
        text = client.get("/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_every_metric_used_is_exposed(scraped: dict[str, set[str]]) -> None:
    used = {name for expr in used_expressions() for name in metric_names(expr)}
    assert used, "no metric names found in deploy/"
    missing = sorted(used - set(scraped) - PROMETHEUS_OWN)
    assert not missing, f"used in deploy/ but not in /metrics: {missing}"


def test_every_label_matched_is_exposed(scraped: dict[str, set[str]]) -> None:
    for expr in used_expressions():
        for name, labels in selector_labels(expr).items():
            if name in PROMETHEUS_OWN:
                continue
            unknown = labels - scraped.get(name, set())
            assert not unknown, f"{name} has no label {sorted(unknown)} (in: {expr})"


def test_rules_structure() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"} and doc["groups"]
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Sharpness[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"(\d+[smhdwy])+", rule.get("for", "0s")), rule
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert all(isinstance(v, str) for v in rule["labels"].values())
            notes = rule["annotations"]
            assert {"summary", "description", "runbook"} <= set(notes)
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    # what issue 13 asks for: stuck runs, dead workers, failure rate, queue age
    assert {
        "SharpnessRunsStuck",
        "SharpnessWorkerDown",
        "SharpnessHighFailureRate",
        "SharpnessQueueWaitingTooLong",
    } <= set(alerts)


def test_runbooks_resolve() -> None:
    """Every alert's runbook is a heading of docs/ops.md."""
    from tests.test_docs_links import anchors

    page = ROOT / "docs" / "ops.md"
    headings = anchors(page)
    for rule in alert_rules():
        target, _, fragment = rule["annotations"]["runbook"].partition("#")
        assert (ROOT / target) == page and fragment in headings, rule["annotations"]["runbook"]


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in dash["panels"])
    for wanted in (
        "Queue depth",
        "Running",
        "Outcomes",
        "Run duration",
        "Queue wait",
        "Workers up",
    ):
        assert wanted in titles, wanted
    exprs = " ".join(dashboard_queries())
    for quantile in ("histogram_quantile(0.5,", "histogram_quantile(0.95,"):
        assert exprs.count(quantile) >= 2  # run duration and queue wait, p50 and p95
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    default = dash["templating"]["list"][0]["current"]["value"]
    assert default in {d["uid"] for d in provisioned["datasources"]}


def test_compose_monitoring_profile() -> None:
    """docker compose --profile monitoring: Prometheus with this config and rules, Grafana
    with this dashboard; the mounted files exist and the scrape reaches the gateway."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), volume
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8000"]
    assert "8000:8000" in services["gateway"]["ports"]


# ------------------------------------------------------------------ promtool, when present
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH")


def promtool(*args: str, cwd: Path) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_checks_rules_and_config() -> None:
    promtool("check", "rules", ALERTS.name, cwd=ALERTS.parent)
    promtool("check", "config", PROMETHEUS.name, cwd=PROMETHEUS.parent)


@needs_promtool
def test_promtool_alert_unit_tests() -> None:
    """The alerts fire on the series that mean trouble, and stay quiet on healthy ones."""
    promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each dashboard query, its Grafana variables filled in, parses as PromQL (as a
    recording rule that promtool checks)."""
    rules = [
        {"record": f"sharpness:dashboard_query_{i}", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", path.name, cwd=tmp_path)
