"""The edge's check, asked as Envoy asks it: ``envoy.service.auth.v3.Authorization/Check`` over
gRPC, with a request's method, path and headers (:mod:`rerank.service.admission.contract`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc


def check_request(path: str, headers: Mapping[str, str] | None = None, method: str = "POST") -> Any:
    """The ``CheckRequest`` Envoy sends for a request of ``method path`` with ``headers``."""
    from rerank.service.protocol import external_auth_pb2

    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.protocol = method, path, "HTTP/1.1"
    http.headers.update(dict(headers or {}))
    return request


def check(
    target: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    metadata: tuple[tuple[str, str], ...] = (),
) -> Any:
    """The check's ``CheckResponse`` for ``method path`` with ``headers``, from the server at ``target``."""
    from rerank.service.protocol import external_auth_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return stub.Check(check_request(path, headers, method), metadata=metadata, timeout=10)


def ok_headers(response: Any) -> dict[str, str]:
    """The headers an allowed check puts on the request ({} when denied)."""
    return {h.header.key: h.header.value for h in response.ok_response.headers}


def denied(response: Any) -> tuple[int, dict[str, str], str] | None:
    """A denial's (HTTP status, headers, body), or None when allowed."""
    if not response.HasField("denied_response"):
        return None
    reply = response.denied_response
    return int(reply.status.code), {h.header.key: h.header.value for h in reply.headers}, reply.body
