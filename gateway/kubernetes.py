"""Envoy's configuration for ``deploy/kubernetes``: the Kubernetes profile of the one renderer.

In Kubernetes, Envoy runs as its own Deployment and reaches the service pods through a headless
Service (:data:`HEADLESS_SERVICE`): its DNS name resolves to one address per ready pod, which
the rendered cluster re-resolves (``STRICT_DNS``) and balances per request. A gRPC client's one
long-lived connection to a ClusterIP Service would pin all its requests on one pod.

The profile is :func:`settings`: the defaults, with the headless Service as the upstream. The
descriptor set is inlined, so the configuration does not depend on the image's file layout.
``python -m rerank.gateway.kubernetes > deploy/kubernetes/envoy-config.yaml`` (``make kubernetes``)
writes the ConfigMap; a test keeps the file equal to :func:`configmap`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rerank.gateway.descriptor import inline_descriptor_set
from rerank.gateway.envoy_config.base import Json
from rerank.gateway.envoy_config.bootstrap import render, to_yaml
from rerank.service.settings import Settings

HEADLESS_SERVICE = "rerank-grpc"
"""The headless Service in front of the service pods (``deploy/kubernetes/service.yaml``), by
its short name: Envoy resolves it in its own namespace, through the pod's DNS search path."""
CONFIGMAP = "rerank-envoy-config"
CONFIG_KEY = "envoy.yaml"
LABELS = {"app.kubernetes.io/name": "rerank", "app.kubernetes.io/component": "envoy"}

HEADER = """\
# Envoy's configuration for deploy/kubernetes (the Kubernetes profile of gateway/envoy_config/).
#
# RENDERED, do not edit: `make kubernetes` (python -m rerank.gateway.kubernetes) writes it from
# service/settings.py, gateway/envoy_config/ and gateway/kubernetes.py; a test keeps it equal.
"""


def settings() -> Settings:
    """The settings the Kubernetes configuration is rendered for: the defaults, with the
    service pods behind the headless Service on the default gRPC port as the upstream."""
    defaults = Settings()
    return Settings(upstreams=f"{HEADLESS_SERVICE}:{defaults.grpc_port}")


IMAGE_ASSETS = Path("/opt/rerank/assets")
"""The files Envoy serves itself (the OpenAPI document, the API page) in the image: a link the
Dockerfile makes to the installed package's ``gateway/assets`` (too large for a ConfigMap, whose
limit is 1 MiB: the API page's script alone is 1.7 MB)."""


def envoy_config() -> Json:
    """Envoy's configuration in Kubernetes, with the descriptor set inlined and the static files
    read from the image (:data:`IMAGE_ASSETS`)."""
    return render(settings(), descriptor=inline_descriptor_set(), assets=IMAGE_ASSETS)


def configmap() -> str:
    """The ConfigMap manifest that holds :func:`envoy_config` under :data:`CONFIG_KEY`."""
    manifest: Json = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "labels": LABELS},
        "data": {CONFIG_KEY: to_yaml(envoy_config())},
    }
    return to_yaml(manifest, header=HEADER)


if __name__ == "__main__":
    sys.stdout.write(configmap())
