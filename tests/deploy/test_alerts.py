"""The monitoring component: its alert rules pass promtool's checks and unit tests, and
every metric that the rules and the dashboard query is one the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from tests.deploy.conftest import K8S, find, rendered

from imageblur.domain import PictureStats, Status
from imageblur.jobs import Outcome
from imageblur.metrics import Metrics

COMPONENT = K8S / "components" / "monitoring"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
METRIC = re.compile(r"\bimageblur_[a-z_]+\b")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return path


def rule_groups() -> dict[str, Any]:
    doc = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    groups: dict[str, Any] = doc["spec"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups()["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((COMPONENT / "imageblur-dashboard.json").read_text())
    return board


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a plain rule file, beside the unit tests."""
    (tmp_path / "imageblur.rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    return tmp_path


def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", "imageblur.rules.yaml"],
        cwd=rules_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_promtool_unit_tests_pass(rules_dir: Path) -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=rules_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_unit_test_that_fires_it_and_a_runbook() -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    quiet = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if not check.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alerts()}
    assert names == fired, "every alert fires in a test"
    assert names == quiet, "every alert stays quiet in a test"
    operations = (K8S.parents[1] / "docs" / "operations.md").read_text()
    for rule in alerts():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {rule['alert']}" in operations and anchor == rule["alert"].lower()


def exported_names() -> set[str]:
    """Every sample name the code exports, as Prometheus stores it (counter `_total`,
    histogram `_bucket`, `_sum`, `_count`, gauges as named)."""
    metrics = Metrics()
    metrics.outcomes(Outcome, ["detect"])
    metrics.watch_worker_ready(lambda: True)
    metrics.watch_pictures(
        lambda: PictureStats(counts={}, oldest_pending_at=None),
        statuses=[s.value for s in Status],
        every_s=15,
    )
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif isinstance(family, HistogramMetricFamily) or family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            assert isinstance(family, GaugeMetricFamily) or family.type == "gauge"
            names.add(family.name)
    return names


def test_every_metric_the_rules_and_the_dashboard_query_is_exported() -> None:
    exported = exported_names()
    queried = {name for rule in alerts() for name in METRIC.findall(rule["expr"])}
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    queried_by_dashboard = {name for expr in exprs for name in METRIC.findall(expr)}
    assert queried and queried_by_dashboard
    assert queried - exported == set(), "the rules query what the code does not export"
    assert queried_by_dashboard - exported == set(), "the dashboard queries unknown metrics"


def test_the_dashboard_shows_what_operators_watch() -> None:
    board = dashboard()
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for subject in ("throughput", "upload latency", "stage", "queue wait", "failures", "faces"):
        assert subject in titles, subject
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_only_prometheus_reaches_the_workers_metrics_port() -> None:
    docs = rendered("ha")
    worker = next(
        d
        for d in find(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    )
    container = worker["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["IMAGEBLUR_METRICS_PORT"] == "9090"
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    admitting = []
    for policy in find(docs, "NetworkPolicy"):
        spec = policy["spec"]
        selector = spec["podSelector"].get("matchLabels") or {}
        if "Ingress" not in spec["policyTypes"] or not selector.items() <= worker_labels.items():
            continue
        for rule in spec.get("ingress") or []:
            admitting.append((policy["metadata"]["name"], rule))
    assert len(admitting) == 1, admitting  # the base denies every other ingress
    _, rule = admitting[0]
    assert rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert source["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    monitor = find(docs, "PodMonitor", "imageblur-worker")[0]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert find(docs, "ServiceMonitor", "imageblur-api")
    assert find(docs, "PrometheusRule", "imageblur")
    dashboards = [
        d
        for d in find(docs, "ConfigMap")
        if (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    assert json.loads(dashboards[0]["data"]["imageblur-dashboard.json"]) == dashboard()
