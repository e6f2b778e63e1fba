"""Envoy's bootstrap configuration: :func:`render` assembles the listener and the clusters for
a set of settings; :func:`to_yaml` writes it; :func:`render_default` is the repository's
``envoy.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml

from rerank.gateway.envoy_config.base import Descriptor, Json
from rerank.gateway.envoy_config.clusters import Upstream, cluster, metrics_cluster, metrics_upstreams, upstreams
from rerank.gateway.envoy_config.listener import listener
from rerank.service.settings import Settings


def render(
    settings: Settings, *, descriptor: Descriptor, endpoints: list[Upstream] | None = None, assets: Path | None = None
) -> Json:
    """Envoy's bootstrap configuration for ``settings``. ``assets``: the folder of the files Envoy
    serves itself (the OpenAPI document, the API page); default: the descriptor's folder, or the
    packaged ``gateway/assets``."""
    endpoints = endpoints if endpoints is not None else upstreams(settings)
    if assets is None:
        assets = descriptor.parent if isinstance(descriptor, Path) else packaged_assets()
    metrics = metrics_upstreams(settings)
    clusters = [cluster(settings, endpoints)]
    if metrics:
        clusters.append(metrics_cluster(metrics))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}},
        # Caps concurrent downstream connections (and silences Envoy's warning about having none).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": [listener(settings, descriptor, assets)],
            "clusters": clusters,
        },
    }


def packaged_assets() -> Path:
    """The installed package's ``gateway/assets`` folder."""
    from importlib import resources

    return Path(str(resources.files("rerank.gateway") / "assets"))


def to_yaml(config: Json, *, header: str = "") -> str:
    """YAML text of a rendered configuration (keys in rendering order)."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style: Literal["|"] | None = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    body = yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return header + body


DEFAULT_HEADER = """\
# Envoy's configuration for rerank's default settings, with one replica.
#
# RENDERED, do not edit: `python -m rerank.gateway.envoy_config > envoy.yaml` (make envoy.yaml) writes it
# from service/settings.py and gateway/envoy_config/, and a test keeps it equal to them.
# rerank-stack and rerank-gateway render their own copy from the settings they are given.
# Run from the repository root after `make install`:  envoy -c envoy.yaml
"""
REPOSITORY_DESCRIPTOR = Path("gateway/assets/rerank.pb")
"""The descriptor set's path from the repository root (where ``make install`` builds it)."""


def render_default() -> str:
    """The repository's ``envoy.yaml``."""
    return to_yaml(render(Settings(), descriptor=REPOSITORY_DESCRIPTOR), header=DEFAULT_HEADER)
