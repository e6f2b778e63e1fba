"""deploy/kubernetes: every manifest is valid for current Kubernetes releases (their API
schemas, strictly: an unknown or misplaced field fails), the ConfigMap holds exactly what the
renderer makes for the Kubernetes profile, and the pieces name each other consistently."""

from __future__ import annotations

import copy
import os
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rerank.gateway import kubernetes
from rerank.gateway.envoy_config import bootstrap
from rerank.gateway.envoy_config.bootstrap import to_yaml
from rerank.gateway.envoy_config.clusters import CLUSTER
from rerank.gateway.proxy import main as gateway_main
from tests.support import REPO

FOLDER = REPO / "deploy" / "kubernetes"
RELEASES = ("1.30.0", kubernetes_validate.latest_version())
"""The oldest release the manifests claim (native preStop sleep is on by default from 1.30) and
the newest the validator knows."""


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((FOLDER / "kustomization.yaml").read_text())


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file, resource) for every resource the kustomization applies."""
    return [
        (name, doc)
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((FOLDER / name).read_text())
        if doc is not None
    ]


def resource(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def test_every_manifest_file_is_applied():
    on_disk = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(kustomization()["resources"]), "a manifest that is not applied is not validated either"


def invalid(doc: dict[str, Any], release: str) -> str | None:
    """Why ``doc`` is not a valid resource for Kubernetes ``release``, or None."""
    try:
        kubernetes_validate.validate(doc, release, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']}: {exc}"
    return None


@pytest.mark.parametrize("release", RELEASES)
def test_every_manifest_is_valid_for_the_kubernetes_api(release):
    problems = [f"{name}: {why}" for name, doc in manifests() if (why := invalid(doc, release))]
    assert not problems, "\n".join(problems)


def test_the_validation_rejects_a_misplaced_field():
    """The check above can fail: a probe field one level too high is not Kubernetes."""
    deployment = copy.deepcopy(resource("Deployment", "rerank-service"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["port"] = container["readinessProbe"]["grpc"]["port"]
    assert "port" in (invalid(deployment, RELEASES[-1]) or "")


def test_the_configmap_is_the_renderers_kubernetes_profile():
    text = (FOLDER / "envoy-config.yaml").read_text()
    assert text == kubernetes.configmap(), "regenerate it: make kubernetes"
    config = yaml.safe_load(text)["data"][kubernetes.CONFIG_KEY]
    assert config == to_yaml(kubernetes.envoy_config())
    cluster = yaml.safe_load(config)["static_resources"]["clusters"][0]
    assert cluster["name"] == CLUSTER and cluster["type"] == "STRICT_DNS"


def test_rerank_gateway_renders_the_same_configuration(capsys, monkeypatch):
    """One renderer: Envoy alone, told the headless Service, prints what the ConfigMap holds."""
    for name in [n for n in os.environ if n.startswith("RERANK_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RERANK_UPSTREAMS", f"{kubernetes.HEADLESS_SERVICE}:50051")
    # In the image, the installed package's assets are where IMAGE_ASSETS links to.
    monkeypatch.setattr(bootstrap, "packaged_assets", lambda: kubernetes.IMAGE_ASSETS)
    assert gateway_main(["--print-config", "--inline-descriptor"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == kubernetes.envoy_config()


def test_envoy_reaches_the_service_pods_through_the_headless_service():
    service = resource("Service", kubernetes.HEADLESS_SERVICE)
    deployment = resource("Deployment", "rerank-service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    endpoint = kubernetes.envoy_config()["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    address = endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address["address"] == kubernetes.HEADLESS_SERVICE
    assert address["port_value"] == service["spec"]["ports"][0]["port"]
    rerank = containers(deployment)["rerank"]
    assert rerank["ports"][0]["containerPort"] == address["port_value"]
    env = {e["name"]: e.get("value") for e in rerank["env"]}
    assert env["RERANK_GRPC_HOST"] == "0.0.0.0" and env["RERANK_GRPC_PORT"] == str(address["port_value"])


def test_the_service_pods_are_probed_drained_and_locked_down():
    deployment = resource("Deployment", "rerank-service")
    rerank = containers(deployment)["rerank"]
    port = rerank["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert rerank[probe]["grpc"]["port"] == port, probe
    assert rerank["readinessProbe"]["grpc"]["service"] == "rerank.v1.RerankService"
    assert rerank["lifecycle"]["preStop"]["sleep"]["seconds"] >= 5  # Envoy re-resolves DNS every 5 s
    assert rerank["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["replicas"] == 2
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(rerank["resources"][part]), part
    # Every path the service writes is a volume: the root filesystem is read-only.
    mounts = {m["mountPath"] for m in rerank["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in rerank["env"]}
    assert {env["RERANK_STATE_DIR"], "/tmp", env["RERANK_MODELS_DIR"]} <= mounts
    # The init container converts into the volume the service reads.
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert init["image"].startswith("rerank-convert") and "/models" in init["args"]


def test_envoy_runs_the_configmap():
    deployment = resource("Deployment", "rerank-envoy")
    envoy = containers(deployment)["envoy"]
    mount = next(m for m in envoy["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == kubernetes.CONFIGMAP
    assert envoy["command"][:3] == ["envoy", "-c", f"{mount['mountPath']}/{kubernetes.CONFIG_KEY}"]
    listener = kubernetes.envoy_config()["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert envoy["ports"][0]["containerPort"] == listener["port_value"]
    assert resource("Service", "rerank")["spec"]["ports"][0]["targetPort"] == envoy["ports"][0]["name"]


def test_the_secret_holds_digests_not_keys():
    secret = resource("Secret", "rerank-api-keys")
    deployment = resource("Deployment", "rerank-service")
    env = {e["name"]: e.get("value") for e in containers(deployment)["rerank"]["env"]}
    (name,) = secret["stringData"]
    assert env["RERANK_API_KEYS_FILE"].endswith("/" + name)
    lines = [line.split("#", 1)[0].strip() for line in secret["stringData"][name].splitlines()]
    digests = [line for line in lines if line]
    assert digests and all(len(bytes.fromhex(d)) == 32 for d in digests)
    assert "RERANK_API_KEYS" not in env


def test_budget_and_autoscaler_select_the_service():
    deployment = resource("Deployment", "rerank-service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert resource("PodDisruptionBudget", "rerank-service")["spec"]["selector"]["matchLabels"] == labels
    hpa = resource("HorizontalPodAutoscaler", "rerank-service")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rerank-service"
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]


def test_only_the_scraper_reaches_the_metrics_port_which_therefore_needs_no_key():
    """The pods serve /metrics without a key (Prometheus' annotations cannot send one) only
    because a NetworkPolicy lets no one but the scraper reach that port."""
    deployment = resource("Deployment", "rerank-service")
    env = {e["name"]: e.get("value") for e in containers(deployment)["rerank"]["env"]}
    assert env["RERANK_METRICS_REQUIRE_KEY"] == "false"
    policy = resource("NetworkPolicy", "rerank-service")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert set(rules) == {"grpc", "metrics"} and rules["grpc"] is None  # gRPC: from anywhere (keys)
    (scraper,) = rules["metrics"]
    assert scraper["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_each_pod_knows_the_address_envoy_reaches_it_by():
    deployment = resource("Deployment", "rerank-service")
    env = {e["name"]: e for e in containers(deployment)["rerank"]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["RERANK_REPLICA_ADDRESS"]["value"] == f"$(POD_IP):{env['RERANK_GRPC_PORT']['value']}"
