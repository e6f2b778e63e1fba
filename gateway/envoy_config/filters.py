"""Envoy's HTTP filters, in order, and the Lua scripts they run.

* With the stack's own replicas (``metrics_upstreams``): the early admission check (a Lua
  filter, ``lua/admission.lua``: a large REST rerank body is refused with 429 before it is read
  when the replicas asked say it would be), and with several replicas the stateful-session
  filter that sends an admitted body to the replica holding its place;
* the buffer filter (a reliable 413 over the body limit);
* a Lua filter (``lua/common.lua`` then ``lua/default.lua``, or a face's script on its routes)
  that drops headers the service's gRPC library would fail on, checks that list fields are
  lists, and on the way back records the key name and gRPC status for the access log and drops
  the gRPC headers the transcoder leaves on JSON responses (listed before the transcoder so
  that it runs after it on responses);
* the gRPC-JSON transcoder, then the router.
"""

from __future__ import annotations

import base64

from rerank.gateway.envoy_config.base import Descriptor, Json
from rerank.gateway.envoy_config.clusters import ADMISSION_CLUSTER, metrics_upstreams, replica_sessions
from rerank.gateway.envoy_config.local_reply import HTTP_TO_GRPC
from rerank.gateway.envoy_config.lua_source import script
from rerank.gateway.routes import LIST_FIELDS, RERANK_PATHS, SERVICES
from rerank.service.router.status import HOLD_HEADER, REPLICA_HEADER
from rerank.service.settings import Settings

FILTER_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
FILTER_LUA = "envoy.filters.http.lua"
FILTER_BUFFER = "envoy.filters.http.buffer"
FILTER_SESSION = "envoy.filters.http.stateful_session"
SESSION_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
SESSION_STATE_TYPE = "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState"
FILTER_ADMISSION = "rerank.admission"
"""The early admission check's Lua filter (a second Lua filter needs its own name)."""
ADMISSION_MIN_BYTES = 64 * 1024
"""Bodies from this size up are checked before they are read; smaller ones pay nothing."""
ADMISSION_TIMEOUT_MS = 250
"""How long the check may take; on timeout or any error the request goes on (fail open). A check
answers in a few milliseconds, but a burst on a busy machine can delay it by tens; a body whose
check times out goes on without a held place, and the service may refuse it after reading it.
The limit bounds what a stuck metrics port adds to a request of 64 KiB or more, which takes
seconds to score anyway."""
ADMISSION_TRIES = 2
"""Replicas asked about one body, in turn, before it is refused early: a body is refused only
when two replicas would refuse it (all of them with two), not because the one asked is busy
while another is idle. More would add a check's latency to every refusal under overload, when
every replica refuses."""
FACE_SCRIPT = "tei"
"""The Lua script of the face routes (``lua/tei.lua``): the TEI face's statuses and error bodies.
A route whose answer is one field of the message names it in its metadata (``unwrap``)."""


def admission_script(settings: Settings, replicas: int, sessions: dict[int, str]) -> str:
    """The early admission check (``lua/admission.lua``), on the request path before the buffer
    filter, asking the ``replicas`` replicas' :data:`~rerank.gateway.envoy_config.clusters.ADMISSION_CLUSTER`
    in turn (:mod:`rerank.service.router.metrics_endpoint` answers: no model, since Envoy has not
    read the body). Chunked bodies (no ``content-length``) are not checked, nor bodies over the
    body limit: the buffer filter refuses those (413), and a body that overflows Envoy's buffers
    while this filter waits for the check's answer stalled until the request timeout. With
    ``sessions`` (:func:`~rerank.gateway.envoy_config.clusters.replica_sessions`), an admitted
    body goes to the replica that holds its place."""
    return script(
        "admission",
        PATHS={variant: True for path in RERANK_PATHS for variant in (path, path + "/")},
        CHECKS=[ADMISSION_CLUSTER.format(i) for i in range(replicas)],
        MAX_TRIES=ADMISSION_TRIES,
        REPLICAS={str(port): session for port, session in sessions.items()},
        MIN_BYTES=ADMISSION_MIN_BYTES,
        MAX_BYTES=settings.max_request_bytes,
        TIMEOUT_MS=ADMISSION_TIMEOUT_MS,
        HOLD_HEADER=HOLD_HEADER,
        REPLICA_HEADER=REPLICA_HEADER,
    )


def response_script(name: str, **constants: object) -> str:
    """A route's Lua script: ``lua/common.lua`` (with :data:`HTTP_TO_GRPC`), then ``lua/<name>.lua``."""
    table = {str(status): str(code) for status, code in HTTP_TO_GRPC.items()}
    return script("common", HTTP_TO_GRPC=table) + script(name, **constants)


def http_filters(settings: Settings, descriptor: Descriptor) -> list[Json]:
    early: list[Json] = []
    sessions = replica_sessions(settings)
    replicas = len(metrics_upstreams(settings))
    if replicas:
        # Before the buffer filter, which would read the whole body first. Only where Envoy
        # fronts the stack's own replicas (their metrics ports); with RERANK_UPSTREAMS there is
        # no metrics cluster, and the service's own check (after the body) is the only one.
        early.append(
            {
                "name": FILTER_ADMISSION,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": admission_script(settings, replicas, sessions)},
                },
            }
        )
        if sessions:
            # Where the admission check left a replica's session header, the request goes to
            # that replica (it holds the request's place); elsewhere load balancing as usual.
            early.append(
                {
                    "name": FILTER_SESSION,
                    "typed_config": {
                        "@type": SESSION_FILTER_TYPE,
                        "session_state": {
                            "name": "envoy.http.stateful_session.header",
                            "typed_config": {
                                "@type": SESSION_STATE_TYPE,
                                "name": REPLICA_HEADER,
                            },
                        },
                    },
                }
            )
    return [
        *early,
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
