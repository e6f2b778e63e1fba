"""Envoy's access log: one JSON line per request on stdout, that reads no secret."""

from __future__ import annotations

from rerank.gateway.envoy_config.base import Json
from rerank.service.admission import contract

CHECK = contract.METADATA_NAMESPACE

ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH):512%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%DYNAMIC_METADATA(rerank:grpc_status)%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "key": f"%DYNAMIC_METADATA({CHECK}:{contract.KEY_METADATA})%",
    "admission": f"%DYNAMIC_METADATA({CHECK}:{contract.ADMISSION_METADATA})%",
    "admission_checks": f"%DYNAMIC_METADATA({CHECK}:{contract.CHECKS_METADATA})%",
    "flags": "%RESPONSE_FLAGS%",
}
"""Envoy's access-log line, one JSON object per request. ``path`` and ``method`` are the
client's (a REST call's, before transcoding; the path's first 512 bytes); ``key`` (the API key's name, never the key),
``admission`` and ``admission_checks`` come from the edge's check (:mod:`rerank.service.admission.contract`:
denied or not, and whether or not the request's body ever came); ``grpc_status``, the call's gRPC
code (REST calls too), from the Lua filter (``lua/common.lua``)."""


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
