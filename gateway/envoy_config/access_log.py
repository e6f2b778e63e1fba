"""Envoy's access log: one JSON line per request on stdout, that reads no secret."""

from __future__ import annotations

from rerank.gateway.envoy_config.base import Json

ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%DYNAMIC_METADATA(rerank:grpc_status)%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "key": "%DYNAMIC_METADATA(rerank:key)%",
    "admission": "%DYNAMIC_METADATA(rerank:admission)%",
    "admission_checks": "%DYNAMIC_METADATA(rerank:admission_checks)%",
    "flags": "%RESPONSE_FLAGS%",
}
"""Envoy's access-log line, one JSON object per request. ``path`` and ``method`` are the
client's (a REST call's, before transcoding); ``key`` is the API key's name (never the key),
``grpc_status`` the call's gRPC code (REST calls too), both put there by the Lua filter
(``lua/common.lua``); ``admission`` and ``admission_checks`` by the early check (``lua/admission.lua``)."""


def access_log() -> Json:
    """One JSON line per request on Envoy's stdout (:data:`ACCESS_LOG_FORMAT`)."""
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": ACCESS_LOG_FORMAT,
                # The path without its query string: a client could put anything there.
                "formatters": [
                    {
                        "name": "envoy.formatter.req_without_query",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3."
                            "ReqWithoutQuery"
                        },
                    }
                ],
            },
        },
    }
