"""Envoy's listener and route table: one listener for REST (JSON, gRPC-JSON transcoding) and
native gRPC (``codec_type: AUTO``), optionally TLS, and the routes it publishes.

The routes come from :mod:`rerank.gateway.routes` (declared once, shared with the OpenAPI
document): files Envoy serves itself, ``GET /metrics`` to the replicas' metrics ports (not
transcoded), 405 for any other method on a REST path, the faces' own routes, native gRPC
(without the buffer filter, so a message over the limit is the service's own RESOURCE_EXHAUSTED),
then everything else transcoded.
"""

from __future__ import annotations

import re
from pathlib import Path

from rerank.gateway.envoy_config.access_log import access_log
from rerank.gateway.envoy_config.base import Descriptor, Json, seconds
from rerank.gateway.envoy_config.clusters import CLUSTER, METRICS_CLUSTER, metrics_upstreams
from rerank.gateway.envoy_config.filters import (
    FACE_SCRIPT,
    FILTER_BUFFER,
    FILTER_CHECK,
    FILTER_LUA,
    FILTER_TRANSCODER,
    check_disabled,
    http_filters,
)
from rerank.gateway.envoy_config.local_reply import local_reply_config
from rerank.gateway.routes import FACE_ROUTES, METHOD_ROUTES, METRICS_PATH, RESPONSE_BODY, STATIC_ROUTES
from rerank.service.settings import Settings

MAX_STATIC_BYTES = 4 * 1024 * 1024
"""The largest file Envoy serves itself (the API page's script is about 1.7 MB)."""


def listener(settings: Settings, descriptor: Descriptor, assets: Path) -> Json:
    chain: Json = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": http_connection_manager(settings, descriptor, assets),
            }
        ]
    }
    if settings.tls_cert is not None:
        chain["transport_socket"] = downstream_tls(settings)
    return {
        "name": "rerank_listener",
        "address": {"socket_address": {"address": settings.rest_host, "port_value": settings.rest_port}},
        "filter_chains": [chain],
    }


def downstream_tls(settings: Settings) -> Json:
    """TLS 1.2+ on the listener, ALPN offering HTTP/2 (so gRPC works) and HTTP/1.1; with a client
    CA, clients must present a certificate it signed (mutual TLS). Plain HTTP is not accepted."""
    assert settings.tls_cert is not None and settings.tls_key is not None
    common: Json = {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(settings.tls_cert.resolve())},
                "private_key": {"filename": str(settings.tls_key.resolve())},
            }
        ],
    }
    context: Json = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common,
    }
    if settings.tls_client_ca is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(settings.tls_client_ca.resolve())}}
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def http_connection_manager(settings: Settings, descriptor: Descriptor, assets: Path) -> Json:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "rerank_ingress",
        "codec_type": "AUTO",
        # Slow clients: headers, then the whole request, within a bound; a request may then wait
        # for its answer up to the route timeout, so a stream is idle-timed out only after that.
        "request_headers_timeout": seconds(settings.headers_timeout),
        "request_timeout": seconds(settings.request_timeout),
        "stream_idle_timeout": seconds(settings.route_timeout + 10),
        "common_http_protocol_options": {"idle_timeout": seconds(settings.idle_timeout), "max_headers_count": 100},
        # The service's gRPC server accepts more metadata than this: an oversized header is
        # Envoy's 431, never the service's RESOURCE_EXHAUSTED.
        "max_request_headers_kb": settings.max_header_kb,
        "http2_protocol_options": {"max_concurrent_streams": settings.max_streams_per_connection},
        "route_config": {
            "name": "rerank_routes",
            "virtual_hosts": [virtual_host(settings, assets)],
            # The API page's script (about 1.7 MB) is a direct response.
            "max_direct_response_body_size_bytes": MAX_STATIC_BYTES,
        },
        "http_filters": http_filters(settings, descriptor),
        "local_reply_config": local_reply_config(),
        "access_log": [access_log()],
    }


def virtual_host(settings: Settings, assets: Path) -> Json:
    # Answered by Envoy itself, without a key: the OpenAPI document, the API page and its files.
    routes: list[Json] = [_static_route(r.path, assets / r.asset, r.content_type) for r in STATIC_ROUTES]
    if metrics_upstreams(settings):
        routes += [_method_not_allowed(METRICS_PATH, "GET"), metrics_route()]
    routes += [_method_not_allowed(path, method) for path, method in METHOD_ROUTES.items()]
    routes += [_face_route(settings, path, method) for path, method in FACE_ROUTES.items()]
    # Native gRPC: no buffer filter (a message over the limit is then the service's own
    # RESOURCE_EXHAUSTED, not a 413 that gRPC clients read as UNKNOWN). The transcoder turns a
    # REST request's content type into application/grpc too, but only after the buffer filter
    # has run on it; the face routes above match their gRPC paths first.
    routes.append(
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
            },
            "route": upstream_route(settings),
            "typed_per_filter_config": {
                FILTER_BUFFER: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                    "disabled": True,
                }
            },
        }
    )
    # Everything else: transcoded REST (incl. GET /health, which the service serves without a key).
    routes.append({"match": {"prefix": "/"}, "route": upstream_route(settings)})
    return {
        "name": "rerank",
        "domains": ["*"],
        "routes": routes,
        # Retries resend the request, so Envoy must keep it: up to the body limit.
        "request_body_buffer_limit": settings.max_request_bytes,
    }


def _method_not_allowed(path: str, method: str) -> Json:
    """405 for any other method on ``path``; the transcoder must be off here or it answers first."""
    return {
        "match": {
            "safe_regex": {"regex": f"{path}/?"},
            "headers": [{"name": ":method", "string_match": {"exact": method}, "invert_match": True}],
        },
        "direct_response": {"status": 405, "body": {"inline_string": "Method Not Allowed"}},
        "response_headers_to_add": [{"header": {"key": "allow", "value": method}}],
        "typed_per_filter_config": {FILTER_TRANSCODER: _filter_disabled(), FILTER_CHECK: check_disabled()},
    }


def _static_route(path: str, file: Path, content_type: str) -> Json:
    return {
        "match": {"path": path},
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
        "typed_per_filter_config": {FILTER_TRANSCODER: _filter_disabled(), FILTER_CHECK: check_disabled()},
    }


def metrics_route() -> Json:
    """``GET /metrics`` to a replica's metrics port, as it is (not transcoded). A key is checked
    by the edge's check, then by the metrics port; a replica that does not answer is retried on
    another."""
    return {
        "match": {"path": METRICS_PATH},
        "route": {
            "cluster": METRICS_CLUSTER,
            "timeout": "10s",
            "retry_policy": retry_on_another_host("reset,connect-failure,refused-stream,5xx"),
        },
        "typed_per_filter_config": {FILTER_TRANSCODER: _filter_disabled()},
    }


def _face_route(settings: Settings, path: str, method: str) -> Json:
    """``path`` (and ``method``'s gRPC path) upstream, responses reshaped by the face's Lua script
    (:data:`~rerank.gateway.envoy_config.filters.FACE_SCRIPT`); a method whose answer is one field
    of its message (:data:`~rerank.gateway.routes.RESPONSE_BODY`) names that field in the route's
    metadata for the script. The route must match both paths: the transcoder rewrites the path
    to the method's and clears the route cache, so a transcoded response is routed by the gRPC
    path, while its own errors (malformed JSON) are answered on the REST path."""
    service, _, name = method.rpartition(".")
    grpc_path = re.escape(f"/{service}/{name}")
    route: Json = {
        "match": {"safe_regex": {"regex": f"{path}/?|{grpc_path}"}},
        "route": upstream_route(settings),
        "typed_per_filter_config": {
            FILTER_LUA: {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                "name": FACE_SCRIPT,
            }
        },
    }
    if method in RESPONSE_BODY:
        route["metadata"] = {"filter_metadata": {FILTER_LUA: {"unwrap": RESPONSE_BODY[method]}}}
    return route


def _filter_disabled() -> Json:
    return {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}


def upstream_route(settings: Settings) -> Json:
    return {
        "cluster": CLUSTER,
        "timeout": seconds(settings.route_timeout),
        # Rerank is idempotent: a request that never got an answer is retried on another replica.
        # No per_try_timeout: an expired try is retried under "reset", which would run the same
        # inference again.
        "retry_policy": retry_on_another_host("reset,connect-failure,refused-stream,unavailable"),
    }


def retry_on_another_host(retry_on: str) -> Json:
    """Up to two retries under ``retry_on``, each on a replica not tried yet."""
    return {
        "retry_on": retry_on,
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }
