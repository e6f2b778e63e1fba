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
        for m in mappers[1:]
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


def test_the_early_admission_check_runs_before_the_buffer_filter_only_before_the_stacks_replicas():
    from rerank.gateway.envoy_config.filters import ADMISSION_MIN_BYTES, FILTER_ADMISSION, FILTER_BUFFER

    stack = _hcm(render(Settings(metrics_port=9100), descriptor=Path("d.pb")))
    names = [f["name"] for f in stack["http_filters"]]
    assert names.index(FILTER_ADMISSION) == 0 and names[1] == FILTER_BUFFER
    code = stack["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    assert 'local CHECKS = {"rerank_admission_0"}' in code and "httpCall(cluster," in code
    assert f"local MIN_BYTES = {ADMISSION_MIN_BYTES}" in code and "size < MIN_BYTES" in code
    assert '["/v1/rerank"] = true' in code and '["/v2/rerank"] = true' in code and '["/rerank"] = true' in code
    early = stack["local_reply_config"]["mappers"][1]["filter"]["metadata_filter"]
    assert early["match_if_key_not_found"] is False
    for settings in (Settings(), Settings(metrics_port=9100, upstreams="svc:50051")):
        hcm = _hcm(render(settings, descriptor=Path("d.pb")))
        assert FILTER_ADMISSION not in [f["name"] for f in hcm["http_filters"]]
        assert all("metadata_filter" not in m["filter"] for m in hcm["local_reply_config"]["mappers"])


def test_with_replicas_an_admitted_body_goes_to_the_replica_that_holds_its_place():
    import base64

    from rerank.gateway.envoy_config.filters import FILTER_ADMISSION, FILTER_BUFFER, FILTER_SESSION

    hcm = _hcm(render(Settings(metrics_port=9100, grpc_port=50051, replicas=2), descriptor=Path("d.pb")))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names[:3] == [FILTER_ADMISSION, FILTER_SESSION, FILTER_BUFFER]
    session = hcm["http_filters"][1]["typed_config"]["session_state"]["typed_config"]
    assert session["name"] == "x-rerank-replica"
    code = hcm["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    for metrics, grpc in ((9100, 50051), (9101, 50052)):  # replica i: metrics port i -> gRPC port i
        assert f'["{metrics}"] = "{base64.b64encode(f"127.0.0.1:{grpc}".encode()).decode()}"' in code
    # The check asks the replicas in turn, each through its own cluster (its own queue).
    assert 'local CHECKS = {"rerank_admission_0", "rerank_admission_1"}' in code
    ports = {
        c["name"]: [
            e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in c["load_assignment"]["endpoints"][0]["lb_endpoints"]
        ]
        for c in render(Settings(metrics_port=9100, replicas=2), descriptor=Path("d.pb"))["static_resources"][
            "clusters"
        ]
    }
    assert ports["rerank_admission_0"] == [9100] and ports["rerank_admission_1"] == [9101]
    # Never a client's: removed before anything else, and from every response.
    assert 'local REPLICA_HEADER = "x-rerank-replica"' in code
    assert code.index("headers:remove(REPLICA_HEADER)") < code.index('headers:get(":method")')
    assert "handle:headers():remove(REPLICA_HEADER)" in code.split("function envoy_on_request")[0]
    one = _hcm(render(Settings(metrics_port=9100, replicas=1), descriptor=Path("d.pb")))
    assert FILTER_SESSION not in [f["name"] for f in one["http_filters"]]
    assert "local REPLICAS = {}" in one["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
