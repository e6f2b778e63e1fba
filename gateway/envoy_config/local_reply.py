"""Envoy's own replies (413, 404, 405, 503, 504, ...) in the service's error shape.

Errors Envoy makes itself become the same JSON as the service's errors (``{"code": <gRPC code>,
"message", "details"}``), so that a client reads one error format; native gRPC clients keep
plain text (their status carries the code).
"""

from __future__ import annotations

from rerank.gateway.envoy_config.base import Json

HTTP_TO_GRPC = {
    400: 3,  # INVALID_ARGUMENT
    431: 3,  # INVALID_ARGUMENT: request headers too large
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
"""Envoy's own replies carry the gRPC code a client would have got from the service (the
inverse of the transcoder's gRPC -> HTTP table); anything else is 2 (UNKNOWN)."""


def local_reply_config() -> Json:
    """Envoy's own replies (413, 404, 405, 503, 504, ...) as ``{"code", "message", "details"}``;
    the edge's check's denials (already that JSON) as they are."""
    mappers: list[Json] = [
        # Native gRPC: keep Envoy's text as grpc-message. The transcoder rewrites a REST request's
        # content-type to application/grpc too, but also adds x-envoy-original-path.
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {
                            "header_filter": {
                                # Native gRPC only: gRPC-Web is transcoded as REST here, and
                                # its errors are JSON like any REST request's (found by fuzzing).
                                "header": {
                                    "name": "content-type",
                                    "string_match": {"safe_regex": {"regex": "application/grpc([+;].*)?"}},
                                }
                            }
                        },
                        {
                            "header_filter": {
                                "header": {"name": "x-envoy-original-path", "present_match": True, "invert_match": True}
                            }
                        },
                    ]
                }
            },
            "body_format_override": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}},
        }
    ]
    # The edge's check's denials (flag UAEX) already carry the service's JSON error: as they are.
    mappers.append(
        {
            "filter": {"response_flag_filter": {"flags": ["UAEX"]}},
            "body_format_override": {
                "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                "content_type": "application/json",
            },
        }
    )
    for status, code in HTTP_TO_GRPC.items():
        mappers.append(
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": status, "runtime_key": f"local_reply.status_{status}"},
                        }
                    }
                },
                "body_format_override": {"json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []}},
            }
        )
    # Any other error: code 2 (UNKNOWN).
    mappers.append(
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "GE",
                        "value": {"default_value": 300, "runtime_key": "local_reply.status_ge_300"},
                    }
                }
            },
            "body_format_override": {"json_format": {"code": 2, "message": "%LOCAL_REPLY_BODY%", "details": []}},
        }
    )
    # What is left are Envoy's own 200s: the files it serves (the OpenAPI document, the API page), as they are.
    return {"mappers": mappers, "body_format": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}}}
