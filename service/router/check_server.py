"""The edge's check on a port of its own (``RERANK_CHECK_PORT``): a synchronous gRPC server whose
threads answer Envoy's ``ext_authz`` (:class:`~rerank.service.router.edge.EdgeCheck`).

On the gRPC port the check shares the event loop with the calls it admits, so under load a
refusal waits its turn behind them (and behind grpc.aio's per-call work) exactly when refusing
fast matters most. Here it has threads of its own and no interceptors: a verdict takes a thread
and the GIL, never the loop. rerank-stack serves the check this way; a service alone serves it
on its gRPC port unless ``RERANK_CHECK_PORT`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent import futures
from typing import Any

import grpc

from rerank.service.protocol import external_auth_pb2, external_auth_pb2_grpc
from rerank.service.router.edge import EdgeCheck

log = logging.getLogger(__name__)

THREADS = 8
"""Threads answering checks: a verdict takes well under a millisecond of CPU, but one that asks a
peer waits up to :data:`~rerank.service.router.edge.PEER_TIMEOUT_SECONDS` for it."""


class _Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, edge: EdgeCheck) -> None:
        self.edge = edge

    def Check(self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext) -> Any:
        try:
            return self.edge.check(request, context.invocation_metadata() or ())
        except Exception:
            # Envoy lets the request on unchecked (failure_mode_allow): the service checks every call.
            log.exception("the edge's check failed")
            context.abort(grpc.StatusCode.INTERNAL, "the edge's check failed")


class CheckServer:
    """``edge``'s check served on its own threads and port."""

    def __init__(self, edge: EdgeCheck, options: Sequence[tuple[str, Any]] = ()) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(THREADS, "rerank-check"), options=list(options))
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(_Authorization(edge), self._server)

    def start(self, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
        """Binds ``address`` (``host:port``) and starts; returns the bound port (0: not bound)."""
        try:
            if credentials is not None:
                port = self._server.add_secure_port(address, credentials)
            else:
                port = self._server.add_insecure_port(address)
        except RuntimeError:
            return 0
        if port:
            self._server.start()
        return port

    def stop(self, grace: float) -> None:
        """Stops taking checks and waits up to ``grace`` seconds for those in progress."""
        self._server.stop(grace).wait()
