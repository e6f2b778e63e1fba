"""deploy/grafana/rerank-dashboard.json asks only for metrics and labels the service exports, and
shows every one of them; deploy/kubernetes has Prometheus scrape each service pod's metrics port."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from rerank.gateway import kubernetes
from rerank.gateway.envoy_config.clusters import METRICS_CLUSTER
from rerank.service.core.metrics import Metrics
from tests.support.prometheus import Samples

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana" / "rerank-dashboard.json"


def exported() -> dict[str, set[str]]:
    """Each series name the service exports -> the labels it carries, as the text format shows
    them once every family has been recorded into (as the guard and a served model do)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    model = metrics.model("m")
    model.record_batch(pairs=2, padded_tokens=8, real_tokens=6, seconds=0.01)
    model.reject("queue_time")
    model.record_tokenization(0.01)
    model.record_queue_wait(0.01)
    metrics.requests.labels("/rerank.v1.RerankService/Rerank", "m", "team", "OK").inc()
    metrics.request_duration.labels("/rerank.v1.RerankService/Rerank", "m").observe(0.01)
    metrics.edge_checks.labels("team", "held").inc()
    series: dict[str, set[str]] = {}
    for name, labels in Samples.parse(generate_latest(registry).decode()):
        series.setdefault(name, set()).update(label for label, _ in labels)
    return series


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)  # any Prometheus the user picks
    return [t["expr"] for p in panels for t in p["targets"]]


def test_every_expression_asks_for_exported_series_and_labels() -> None:
    series = exported()
    problems = []
    for expr in expressions():
        grouped = {g.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for g in group.split(",")}
        for name, selector in re.findall(r"\b(rerank_\w+)(?:\{([^}]*)\})?", expr):
            if name not in series:
                problems.append(f"{name} is not exported: {expr}")
                continue
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector or "")) | grouped
            problems += [f"{name} has no label {label}: {expr}" for label in sorted(used - series[name])]
    assert not problems, "\n".join(problems)


def test_every_exported_metric_has_a_panel() -> None:
    shown = {m for expr in expressions() for m in re.findall(r"\brerank_\w+", expr)}
    families = {
        name.removesuffix(s) for name in shown for s in ("_total", "_bucket", "_count", "_sum") if name.endswith(s)
    }
    registry = CollectorRegistry()
    Metrics(registry)
    missing = {f.name for f in registry.collect()} - shown - families
    assert not missing, f"no panel shows {sorted(missing)}"


def test_the_checks_above_can_fail() -> None:
    assert "rerank_no_such_total" not in exported() and "rerank_pairs_total" in exported()
    assert "code" in exported()["rerank_requests_total"] and "code" not in exported()["rerank_pairs_total"]


def manifests() -> list[dict[str, Any]]:
    folder = REPO / "deploy" / "kubernetes"
    return [d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def test_prometheus_scrapes_each_service_pod_on_its_metrics_port() -> None:
    deployment = next(d for d in manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == "rerank-service")
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    (container,) = [c for c in template["spec"]["containers"] if c["name"] == "rerank"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] == int(env["RERANK_METRICS_PORT"])
    assert env["RERANK_GRPC_HOST"] == "0.0.0.0"  # the metrics port binds the gRPC host: the pod's interface
    headless = next(d for d in manifests() if d["kind"] == "Service" and d["metadata"]["name"] == "rerank-grpc")
    assert {"name": "metrics", "port": ports["metrics"], "targetPort": "metrics", "appProtocol": "http"} in headless[
        "spec"
    ]["ports"]
    # Through Envoy, one request would reach one pod: in Kubernetes it does not route /metrics.
    clusters = kubernetes.envoy_config()["static_resources"]["clusters"]
    assert METRICS_CLUSTER not in {c["name"] for c in clusters}
