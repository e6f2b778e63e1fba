"""Envoy's upstream clusters: the service's replicas (for calls and the edge's checks alike) and
their metrics ports.

Upstream: HTTP/2, least-request balancing across replicas, active gRPC health checks, retries
under a retry budget (the routes say on what), outlier detection, and a ping on every connection
each second, so that a replica that stops answering (a stopped or frozen process) has its
connections closed within seconds and the calls on them retried on another replica.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rerank.gateway.envoy_config.base import Json, seconds
from rerank.service.settings import Settings

CLUSTER = "rerank_grpc"
METRICS_CLUSTER = "rerank_metrics"
HEALTH_SERVICE = "rerank.v1.RerankService"
PING_SECONDS = 1.0
"""How often Envoy pings each replica connection, and how long it waits for the answer: a replica
that does not answer is cut off and its calls retried elsewhere (the service permits pings this
often: ``rerank.service.server.PING_OPTIONS``). Never a limit on how long a call may take: a slow
replica answers pings."""


@dataclass(frozen=True)
class Upstream:
    """One endpoint of the service: an address or a DNS name (re-resolved), and a port."""

    host: str
    port: int

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def upstreams(settings: Settings) -> list[Upstream]:
    """``RERANK_UPSTREAMS`` when set, else the stack's replicas on consecutive loopback ports."""
    if settings.upstreams:
        found = []
        for item in settings.upstreams.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"RERANK_UPSTREAMS: {item.strip()!r} is not host:port")
            found.append(Upstream(host.strip("[]"), int(port)))
        return found
    return [Upstream("127.0.0.1", settings.grpc_port + i) for i in range(settings.replicas)]


def metrics_upstreams(settings: Settings) -> list[Upstream]:
    """Where ``GET /metrics`` goes: the stack's replicas' metrics ports (consecutive from
    ``RERANK_METRICS_PORT``), each of which serves the whole stack's metrics. None (no route)
    with ``RERANK_UPSTREAMS`` (separate services are scraped one by one, where they run) or
    without a metrics port."""
    if settings.upstreams or not settings.metrics_port:
        return []
    return [Upstream("127.0.0.1", settings.metrics_port + i) for i in range(settings.replicas)]


def cluster(settings: Settings, endpoints: list[Upstream]) -> Json:
    dns = any(not e.is_address for e in endpoints)
    interval = seconds(settings.health_check_interval)
    result: Json = {
        "name": CLUSTER,
        # A DNS name (a Kubernetes headless Service) is re-resolved: one host per address.
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
                        for e in endpoints
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                # Mandatory: gRPC (and grpc_health_check) needs HTTP/2 upstream.
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": seconds(PING_SECONDS), "timeout": seconds(PING_SECONDS)}
                    }
                },
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    # Retries may add at most 20 % to the requests in flight (at least 16 at once): enough
                    # to carry a dead replica's share, never a retry storm.
                    "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 16},
                    "max_connections": 1024,
                    "max_pending_requests": 100000,
                    "max_requests": 100000,
                }
            ]
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": interval,
                # The default is 60 s while the cluster has had no traffic: a replica that comes up
                # after Envoy would stay unhealthy for a minute.
                "no_traffic_interval": interval,
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": HEALTH_SERVICE},
            }
        ],
        # When fewer than half the hosts are healthy Envoy uses them all ("panic mode", its
        # default, stated on purpose): a lone replica still gets requests while it drains or
        # before its first passing check, instead of 503 "no healthy upstream".
        "common_lb_config": {"healthy_panic_threshold": {"value": 50}},
        "outlier_detection": {
            # Eject a replica after 2 consecutive gateway failures (connect failure, reset,
            # 502/503/504); application errors (INTERNAL -> 500) must not eject.
            "consecutive_gateway_failure": 2,
            "enforcing_consecutive_gateway_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 100,
        },
    }
    if settings.upstream_tls_ca is not None:
        # The services serve TLS (RERANK_GRPC_TLS_CERT): verify their chain against this CA.
        result["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {"trusted_ca": {"filename": str(settings.upstream_tls_ca.resolve())}},
                },
            },
        }
    if dns:
        result["dns_refresh_rate"] = "5s"
        result["dns_lookup_family"] = "V4_PREFERRED"
    return result


def metrics_cluster(endpoints: list[Upstream]) -> Json:
    """The replicas' metrics ports: plain HTTP/1.1, round robin (any replica has it all)."""
    return _plain_cluster(METRICS_CLUSTER, endpoints)


def _plain_cluster(name: str, endpoints: list[Upstream]) -> Json:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
                        for e in endpoints
                    ]
                }
            ],
        },
    }
