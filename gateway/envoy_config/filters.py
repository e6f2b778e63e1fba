"""Envoy's HTTP filters, in order, and the Lua scripts they run.

* the edge's first filter (a Lua filter, ``lua/edge.lua``): a client's ``x-rerank-*`` headers are
  dropped (they are the edge's to set), native gRPC that is not HTTP/2 is answered here, and so
  is a REST request whose declared length is over the body limit (413, the check never asked);
* the edge's check (``ext_authz``, gRPC, headers only): a replica's
  ``envoy.service.auth.v3.Authorization/Check`` (:mod:`rerank.service.router.edge`, the contract in
  :mod:`rerank.service.admission.contract`) checks the API key, charges the key's limits and admits
  a rerank body before it is read; denied, Envoy answers with the check's reply; admitted, the
  request carries the check's token and, pinned by the stateful-session filter, goes to the
  replica holding its place; unanswered in time, it goes on unchecked (the service checks again);
* the buffer filter (a reliable 413 over the body limit);
* a Lua filter (``lua/common.lua`` then ``lua/default.lua``, or a face's script on its routes)
  that drops headers the service's gRPC library would fail on, checks that list fields are
  lists, and on the way back records the gRPC status for the access log, drops the gRPC headers
  the transcoder leaves on JSON responses and cuts an error's echo of the request short (listed
  before the transcoder so that it runs after it on responses);
* the gRPC-JSON transcoder, then the router.
"""

from __future__ import annotations

import base64

from rerank.gateway.envoy_config.base import Descriptor, Json, seconds
from rerank.gateway.envoy_config.clusters import CLUSTER
from rerank.gateway.envoy_config.local_reply import HTTP_TO_GRPC
from rerank.gateway.envoy_config.lua_source import script
from rerank.gateway.routes import LIST_FIELDS, SERVICES
from rerank.service.admission import contract
from rerank.service.settings import Settings

FILTER_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
FILTER_LUA = "envoy.filters.http.lua"
FILTER_BUFFER = "envoy.filters.http.buffer"
FILTER_CHECK = contract.METADATA_NAMESPACE
"""The ext_authz filter, named as Envoy names its dynamic metadata's namespace."""
FILTER_EDGE = "rerank.edge"
"""The edge's first Lua filter (a second Lua filter needs its own name)."""
FILTER_SESSION = "envoy.filters.http.stateful_session"
SESSION_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
SESSION_STATE_TYPE = "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState"
FACE_SCRIPT = "tei"
"""The Lua script of the face routes (``lua/tei.lua``): the TEI face's statuses and error bodies.
A route whose answer is one field of the message names it in its metadata (``unwrap``)."""
MAX_ECHO_BYTES = 1024
"""An error body Envoy passes on quotes at most this many bytes of its message (``lua/common.lua``)."""


def edge_check() -> Json:
    """The ext_authz filter: the replicas' check, before the body is read, failing open."""
    return {
        "name": FILTER_CHECK,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": CLUSTER},
                "timeout": seconds(contract.CHECK_TIMEOUT_SECONDS),
            },
            # Unanswered (no replica in time): on, unchecked; the service checks every call itself.
            "failure_mode_allow": True,
            "allowed_headers": {"patterns": [{"exact": name} for name in contract.CHECKED_HEADERS]},
        },
    }


def check_disabled() -> Json:
    """The per-route configuration that skips the check (routes Envoy answers itself)."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }


def response_script(name: str, **constants: object) -> str:
    """A route's Lua script: ``lua/common.lua`` (with :data:`HTTP_TO_GRPC`), then ``lua/<name>.lua``."""
    table = {str(status): str(code) for status, code in HTTP_TO_GRPC.items()}
    return script("common", HTTP_TO_GRPC=table, MAX_ECHO=MAX_ECHO_BYTES) + script(name, **constants)


def http_filters(settings: Settings, descriptor: Descriptor) -> list[Json]:
    return [
        {
            "name": FILTER_EDGE,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {
                    "inline_string": script(
                        "edge",
                        PREFIX=contract.HEADER_PREFIX,
                        REPLICA_HEADER=contract.REPLICA_HEADER,
                        MAX_BODY=settings.max_request_bytes,
                    )
                },
            },
        },
        edge_check(),
        # Where the check left a replica's session header, the request goes to that replica (it
        # holds the request's place); elsewhere, and on retries, load balancing as usual.
        {
            "name": FILTER_SESSION,
            "typed_config": {
                "@type": SESSION_FILTER_TYPE,
                "session_state": {
                    "name": "envoy.http.stateful_session.header",
                    "typed_config": {"@type": SESSION_STATE_TYPE, "name": contract.REPLICA_HEADER},
                },
            },
        },
        # Bodies over the limit get a 413 before anything is transcoded (the transcoder's own
        # limit does not give a reliable 413: large bodies reached the service as 429).
        {
            "name": FILTER_BUFFER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": settings.max_request_bytes,
            },
        },
        # Before the transcoder, so that it runs after it on the response path. Never remove
        # these headers at route level: that breaks REST errors and native gRPC alike.
        {
            "name": FILTER_LUA,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": response_script("default", LIST_FIELDS=LIST_FIELDS)},
                "source_codes": {FACE_SCRIPT: {"inline_string": response_script(FACE_SCRIPT)}},
            },
        },
        {"name": FILTER_TRANSCODER, "typed_config": transcoder(settings, descriptor)},
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def transcoder(settings: Settings, descriptor: Descriptor) -> Json:
    source = (
        {"proto_descriptor_bin": base64.b64encode(descriptor).decode()}
        if isinstance(descriptor, bytes)
        else {"proto_descriptor": str(descriptor)}
    )
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        **source,
        "services": list(SERVICES),
        "print_options": {
            "preserve_proto_field_names": True,  # relevance_score, not relevanceScore
            "always_print_primitive_fields": True,  # "index": 0 is printed
        },
        "convert_grpc_status": True,  # gRPC errors -> JSON bodies
        # Unknown query parameters would otherwise send raw JSON to the service (a stream reset,
        # then 503 after retries).
        "ignore_unknown_query_parameters": True,
        # Unknown path or method -> 404 here, not an upstream reset.
        "request_validation_options": {"reject_unknown_method": True},
        "max_request_body_size": settings.max_request_bytes,
        "max_response_body_size": 8 * settings.max_request_bytes,  # return_documents echoes the request
    }
