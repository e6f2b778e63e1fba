"""Envoy's configuration, rendered from the settings."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from rerank.gateway.envoy_config.bootstrap import render, render_default
from rerank.gateway.envoy_config.clusters import Upstream, upstreams
from rerank.service.settings import Settings
from tests.support import REPO


def _cluster(config):
    return config["static_resources"]["clusters"][0]


def _hcm(config):
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _filter(config, name):
    return next(f["typed_config"] for f in _hcm(config)["http_filters"] if f["name"] == name)


def test_repository_envoy_yaml_is_the_default_rendering():
    assert (REPO / "envoy.yaml").read_text() == render_default(), (
        "regenerate it: python -m rerank.gateway.envoy_config > envoy.yaml"
    )


def test_replicas_are_consecutive_loopback_endpoints():
    config = render(Settings(grpc_port=7000, replicas=3), descriptor=Path("d.pb"))
    cluster = _cluster(config)
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [7000, 7001, 7002]
    assert cluster["type"] == "STATIC" and cluster["lb_policy"] == "LEAST_REQUEST"


def test_a_dns_name_is_re_resolved():
    config = render(Settings(upstreams="rerank-service.ns.svc:50051"), descriptor=Path("d.pb"))
    assert _cluster(config)["type"] == "STRICT_DNS"
    assert upstreams(Settings(upstreams="a:1, [::1]:2")) == [Upstream("a", 1), Upstream("::1", 2)]
    with pytest.raises(ValueError, match="not host:port"):
        upstreams(Settings(upstreams="nohost"))


def test_limits_and_timings_come_from_the_settings():
    s = Settings(max_request_bytes=123456, route_timeout=7.5, health_check_interval=0.5, rest_port=81, admin_port=82)
    config = render(s, descriptor=Path("d.pb"))
    assert _filter(config, "envoy.filters.http.buffer")["max_request_bytes"] == 123456
    assert _filter(config, "envoy.filters.http.grpc_json_transcoder")["max_request_body_size"] == 123456
    vhost = _hcm(config)["route_config"]["virtual_hosts"][0]
    assert vhost["request_body_buffer_limit"] == 123456  # retries need the body
    assert vhost["routes"][-1]["route"]["timeout"] == "7.5s"
    assert _cluster(config)["health_checks"][0]["interval"] == "0.5s"
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 81
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 82}


def test_descriptor_by_path_or_inline():
    by_path = _filter(render(Settings(), descriptor=Path("/x/rerank.pb")), "envoy.filters.http.grpc_json_transcoder")
    assert by_path["proto_descriptor"] == "/x/rerank.pb"
    inline = _filter(render(Settings(), descriptor=b"\x00\x01bytes"), "envoy.filters.http.grpc_json_transcoder")
    assert base64.b64decode(inline["proto_descriptor_bin"]) == b"\x00\x01bytes"


def test_envoys_own_errors_carry_grpc_codes():
    mappers = _hcm(render(Settings(), descriptor=Path("d.pb")))["local_reply_config"]["mappers"]
    codes = {
        m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]: m["body_format_override"][
            "json_format"
        ]["code"]
        for m in mappers
        if "status_code_filter" in m["filter"] and "json_format" in m["body_format_override"]
    }
    assert codes[413] == 8 and codes[503] == 14 and codes[404] == 5


def test_the_rendering_is_valid_yaml_round_trip():
    text = render_default()
    assert yaml.safe_load(text)["static_resources"]["clusters"][0]["name"] == "rerank_grpc"


def test_tls_on_the_listener_and_to_the_services(tmp_path):
    from pathlib import Path as P

    s = Settings(tls_cert=P("/c.pem"), tls_key=P("/k.pem"), tls_client_ca=P("/ca.pem"), upstream_tls_ca=P("/up.pem"))
    config = render(s, descriptor=P("d.pb"))
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
    context = chain["transport_socket"]["typed_config"]
    common = context["common_tls_context"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert common["alpn_protocols"] == ["h2", "http/1.1"]  # gRPC needs h2 over TLS
    assert context["require_client_certificate"] is True
    assert common["validation_context"]["trusted_ca"]["filename"] == "/ca.pem"
    upstream = _cluster(config)["transport_socket"]["typed_config"]["common_tls_context"]
    assert upstream["validation_context"]["trusted_ca"]["filename"] == "/up.pem"
    plain = render(Settings(), descriptor=P("d.pb"))
    assert "transport_socket" not in plain["static_resources"]["listeners"][0]["filter_chains"][0]
    assert "transport_socket" not in _cluster(plain)


def test_slow_and_oversized_clients_are_bounded():
    s = Settings(headers_timeout=2, request_timeout=20, idle_timeout=60, max_streams_per_connection=50, max_header_kb=8)
    hcm = _hcm(render(s, descriptor=Path("d.pb")))
    assert (hcm["request_headers_timeout"], hcm["request_timeout"]) == ("2s", "20s")
    assert hcm["common_http_protocol_options"]["idle_timeout"] == "60s"
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] == 50
    assert hcm["max_request_headers_kb"] == 8


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": Path("/c.pem")}, "RERANK_TLS_CERT and RERANK_TLS_KEY go together"),
        ({"grpc_tls_key": Path("/k.pem")}, "RERANK_GRPC_TLS_CERT and RERANK_GRPC_TLS_KEY go together"),
        ({"tls_client_ca": Path("/ca.pem")}, "RERANK_TLS_CLIENT_CA needs RERANK_TLS_CERT"),
    ],
)
def test_incomplete_tls_settings_are_refused(settings, message):
    from rerank.service.settings import SettingsError

    with pytest.raises(SettingsError, match=message):
        Settings(**settings)


def test_the_edge_check_runs_before_the_body_is_read_and_fails_open():
    from rerank.gateway.envoy_config.filters import FILTER_BUFFER, FILTER_CHECK, FILTER_EDGE, FILTER_SESSION
    from rerank.service.admission import contract

    for settings in (Settings(), Settings(metrics_port=9100, replicas=2), Settings(upstreams="svc:50051")):
        hcm = _hcm(render(settings, descriptor=Path("d.pb")))
        names = [f["name"] for f in hcm["http_filters"]]
        assert names[:4] == [FILTER_EDGE, FILTER_CHECK, FILTER_SESSION, FILTER_BUFFER]
        check = hcm["http_filters"][1]["typed_config"]
        assert check["grpc_service"]["envoy_grpc"]["cluster_name"] == "rerank_grpc"  # the replicas themselves
        assert check["grpc_service"]["timeout"] == "0.25s" and check["failure_mode_allow"] is True
        assert "with_request_body" not in check  # headers only: the body is not read for it
        assert [p["exact"] for p in check["allowed_headers"]["patterns"]] == list(contract.CHECKED_HEADERS)
        session = hcm["http_filters"][2]["typed_config"]["session_state"]["typed_config"]
        assert session["name"] == contract.REPLICA_HEADER
        # The check's denials keep their own JSON body (Envoy's other replies are mapped).
        (uaex,) = [m for m in hcm["local_reply_config"]["mappers"] if "response_flag_filter" in m["filter"]]
        assert uaex["filter"]["response_flag_filter"]["flags"] == ["UAEX"]
        assert uaex["body_format_override"]["text_format_source"]["inline_string"] == "%LOCAL_REPLY_BODY%"


def test_routes_envoy_answers_itself_skip_the_check():
    from rerank.gateway.envoy_config.filters import FILTER_CHECK

    routes = _hcm(render(Settings(metrics_port=9100), descriptor=Path("d.pb")))["route_config"]["virtual_hosts"][0]
    for route in routes["routes"]:
        disabled = route.get("typed_per_filter_config", {}).get(FILTER_CHECK, {}).get("disabled", False)
        assert disabled == ("direct_response" in route), route["match"]


def test_a_clients_own_edge_headers_never_reach_anything():
    from rerank.gateway.envoy_config.filters import FILTER_EDGE

    hcm = _hcm(render(Settings(), descriptor=Path("d.pb")))
    edge = next(f for f in hcm["http_filters"] if f["name"] == FILTER_EDGE)
    code = edge["typed_config"]["default_source_code"]["inline_string"]
    assert 'local PREFIX = "x-rerank-"' in code and "headers:remove(key)" in code
    assert code.index("headers:remove(key)") < code.index("respond(")  # dropped before anything else


def test_replicas_are_pinged_every_second():
    """A replica that stops answering (a stopped process) is cut off within seconds and the calls
    on its connections retried elsewhere, instead of waiting for the route's timeout."""
    options = _cluster(render(Settings(), descriptor=Path("d.pb")))["typed_extension_protocol_options"]
    http2 = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    assert http2["http2_protocol_options"]["connection_keepalive"] == {"interval": "1s", "timeout": "1s"}
