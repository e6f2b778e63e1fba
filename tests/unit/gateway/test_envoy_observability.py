"""Envoy's rendered configuration for metrics and logs: GET /metrics routed (not transcoded) to
the replicas' metrics ports where they share their metrics, a JSON access log that reads no
secret, the Lua filter's gRPC-status table, and Envoy's log level never at debug."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rerank.gateway.envoy import envoy_log_level
from rerank.gateway.envoy_config.access_log import ACCESS_LOG_FORMAT
from rerank.gateway.envoy_config.bootstrap import render
from rerank.gateway.envoy_config.clusters import METRICS_CLUSTER
from rerank.gateway.envoy_config.filters import FILTER_TRANSCODER, response_script
from rerank.gateway.envoy_config.local_reply import HTTP_TO_GRPC
from rerank.service.settings import Settings

DESCRIPTOR = Path("d.pb")


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    return hcm(config)["route_config"]["virtual_hosts"][0]["routes"]


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_metrics_go_to_every_replicas_metrics_port_untranscoded() -> None:
    config = render(Settings(replicas=3, metrics_port=9400), descriptor=DESCRIPTOR)
    (route,) = [r for r in routes(config) if r["match"] == {"path": "/metrics"}]
    assert route["route"]["cluster"] == METRICS_CLUSTER
    assert route["typed_per_filter_config"][FILTER_TRANSCODER]["disabled"] is True
    assert "connect-failure" in route["route"]["retry_policy"]["retry_on"]  # any replica will do
    # Other methods are 405, before the route.
    (not_get,) = [r for r in routes(config) if r.get("match", {}).get("safe_regex", {}).get("regex") == "/metrics/?"]
    assert routes(config).index(not_get) < routes(config).index(route)
    endpoints = clusters(config)[METRICS_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    addresses = [e["endpoint"]["address"]["socket_address"] for e in endpoints]
    assert addresses == [{"address": "127.0.0.1", "port_value": p} for p in (9400, 9401, 9402)]
    # Plain HTTP/1.1: unlike the gRPC cluster, no HTTP/2 options.
    assert "typed_extension_protocol_options" not in clusters(config)[METRICS_CLUSTER]


def test_no_metrics_route_where_one_request_would_see_one_service() -> None:
    for settings in (Settings(metrics_port=0), Settings(metrics_port=9400, upstreams="svc:50051")):
        config = render(settings, descriptor=DESCRIPTOR)
        assert METRICS_CLUSTER not in clusters(config)
        assert not [r for r in routes(config) if "metrics" in str(r["match"])]


def test_the_access_log_is_one_json_line_that_reads_no_secret() -> None:
    (log,) = hcm(render(Settings(), descriptor=DESCRIPTOR))["access_log"]
    assert log["typed_config"]["@type"].endswith("StdoutAccessLog")
    assert log["typed_config"]["log_format"]["json_format"] == ACCESS_LOG_FORMAT
    assert set(ACCESS_LOG_FORMAT) >= {
        "request_id",
        "method",
        "path",
        "status",
        "grpc_status",
        "duration_ms",
        "bytes_received",
        "bytes_sent",
        "upstream_host",
        "key",
    }
    # The only request headers read: the request id and the client's path and method (the path
    # without its query string).
    headers = {
        h for value in ACCESS_LOG_FORMAT.values() for h in re.findall(r"REQ(?:_WITHOUT_QUERY)?\(([^)]*)\)", value)
    }
    assert headers == {"X-REQUEST-ID", "X-ENVOY-ORIGINAL-METHOD?:METHOD", "X-ENVOY-ORIGINAL-PATH?:PATH"}
    assert ACCESS_LOG_FORMAT["path"].startswith("%REQ_WITHOUT_QUERY(")
    # The key's name, as the edge's check named it: logged for every checked request, even one
    # whose body never came.
    assert ACCESS_LOG_FORMAT["key"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:key)%"


def test_the_lua_filter_maps_http_back_to_the_grpc_codes_of_the_local_replies() -> None:
    source = response_script("tei")
    line = next(line for line in source.splitlines() if line.startswith("local HTTP_TO_GRPC = "))
    table = dict(re.findall(r'\["(\d+)"\] = "(\d+)"', line))
    assert table == {str(status): str(code) for status, code in HTTP_TO_GRPC.items()}


def test_envoy_never_logs_at_debug() -> None:
    """Envoy's debug lines print every request's headers, keys included."""
    assert {level: envoy_log_level(level) for level in ("debug", "info", "warning", "error")} == {
        "debug": "info",
        "info": "warn",
        "warning": "warn",
        "error": "error",
    }
