"""The edge's check: ``envoy.service.auth.v3.Authorization/Check``, which Envoy's ``ext_authz``
filter calls with a request's method, path and a few headers before it reads the body
(:mod:`rerank.service.admission.contract`). In one call, in order:

1. **Who**: a request without a valid API key is denied 401 (health checks pass without one, and
   ``/metrics`` does unless ``RERANK_METRICS_REQUIRE_KEY``). Nothing unauthenticated reaches a
   replica's model, its health or Envoy's outlier detection.
2. **The key's limits**: a rerank call is charged to its key like the call itself (rps, and tpm
   while positive), across the stack (:mod:`rerank.service.router.limits`); over a limit: 429 with
   ``Retry-After``.
3. **Admission**: a rerank body of known size is priced
   (:class:`~rerank.service.admission.estimate.BodyPrice`) and admitted if it may wait on some
   model (:func:`~rerank.service.admission.queue.queue_time_refusal`, counting the places already
   held). Admitted, its cost is held on every model with room and the request goes on with the
   token that claims it (:class:`~rerank.service.admission.holds.Holds`) and, where this replica
   knows its address, pinned here. Refused here, the check asks one peer replica, which holds
   the place itself if it has room; refused there too, 429 with the shorter ``Retry-After``, the
   body never read. A draining replica admits without charging or holding (Envoy sends the call
   elsewhere, where it is charged).

Each answer carries the key's name and the outcome as dynamic metadata for Envoy's access log,
and is counted (``rerank_edge_checks_total``, and a refusal in ``rerank_rejected_requests_total``)
by the replica Envoy asked, with what became of the request: a peer does not count the question.
A denial's body is the service's own error (``{"code", "message", "details"}`` for REST; for
native gRPC its status, message and details).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.api import annotations_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from rerank.service.admission import contract
from rerank.service.core.metrics import NONE, Metrics
from rerank.service.core.reranker import ServedModel
from rerank.service.errors import QueueFull, RateLimited, RerankError, Unauthenticated, Unavailable
from rerank.service.protocol import (
    base_pb2,
    cohere_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
    http_status_pb2,
    rerank_pb2,
    tei_rest_pb2,
)
from rerank.service.router.auth import PUBLIC_METHODS, ApiKey, Keyring, bearer_token
from rerank.service.router.limits import Callers, identity
from rerank.service.router.metrics_endpoint import PATH as METRICS_PATH
from rerank.service.router.status import status_code, status_json, status_message

log = logging.getLogger(__name__)

RERANK_METHODS = frozenset(
    {
        "/rerank.v1.RerankService/Rerank",
        "/rerank.v1.CohereService/Rerank",
        "/rerank.v1.TeiService/Rerank",
        "/tei.v1.Rerank/Rerank",
        "/tei.v1.Rerank/RerankStream",
    }
)
"""The gRPC methods that rank: their calls, and their REST routes', are charged and admitted."""
PEER_TIMEOUT_SECONDS = 0.1
"""How long a check waits for its peer (within Envoy's wait for the check,
:data:`~rerank.service.admission.contract.CHECK_TIMEOUT_SECONDS`)."""
HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: http_status_pb2.Unauthorized,
    grpc.StatusCode.RESOURCE_EXHAUSTED: http_status_pb2.TooManyRequests,
    grpc.StatusCode.UNAVAILABLE: http_status_pb2.ServiceUnavailable,
}
"""The HTTP status of each denial's gRPC code (the transcoder's mapping)."""


def rest_routes(methods: Iterable[str]) -> frozenset[str]:
    """The REST paths (``google.api.http`` rules) of the gRPC ``methods`` (``/package.Service/Method``)."""
    wanted = set(methods)
    paths = set()
    for module in (rerank_pb2, cohere_pb2, tei_rest_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if f"/{service.full_name}/{method.name}" in wanted:
                    rule = method.GetOptions().Extensions[annotations_pb2.http]
                    paths.add(getattr(rule, rule.WhichOneof("pattern")))
    return frozenset(paths)


RERANK_PATHS = RERANK_METHODS | rest_routes(RERANK_METHODS)
PUBLIC_PATHS = PUBLIC_METHODS | rest_routes(PUBLIC_METHODS)


def request_path(path: str) -> str:
    """``path`` as routes know it: without its query, and without one trailing slash."""
    path = path.partition("?")[0]
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def is_grpc(content_type: str) -> bool:
    """Native gRPC (not gRPC-Web, which this gateway transcodes as REST)."""
    content_type = content_type.lower()
    return content_type == "application/grpc" or content_type.startswith(("application/grpc+", "application/grpc;"))


def header(name: str, value: str) -> base_pb2.HeaderValueOption:
    """``name: value``, replacing whatever the request or reply had."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


@dataclass
class Verdict:
    """What the check answers: allowed (with headers for the request) or denied (``error``)."""

    outcome: str
    key: ApiKey | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: RerankError | None = None
    checks: int = 0
    """Replicas asked about the body's admission (0: not asked)."""


class EdgeCheck(external_auth_pb2_grpc.AuthorizationServicer):
    """The check, for a server's models, keys and limits."""

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        callers: Callers,
        *,
        metrics: Metrics | None = None,
        metrics_require_key: bool = False,
        max_request_bytes: int | None = None,
        replica_address: str = "",
        peers: Iterable[str] = (),
        peer_secret: str = "",
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.models = models
        self.callers = callers
        self.keyring: Keyring = callers.keyring
        self.metrics = metrics
        self.metrics_require_key = metrics_require_key
        self.max_request_bytes = max_request_bytes
        """Bodies over this size pass unpriced: Envoy's buffer filter answers them 413 (too large,
        not busy: a client must not retry them)."""
        self.pin = base64.b64encode(replica_address.encode()).decode() if replica_address else ""
        """This replica's address as Envoy's header-based stateful session writes it ('' unknown)."""
        self.peers = list(peers) if peer_secret else []
        self.peer_secret = peer_secret
        self.draining = draining
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._turn = 0

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        grpc_call = is_grpc(http.headers.get("content-type", ""))
        forwarded = self._forwarded(context)
        verdict = await self.decide(http, forwarded=forwarded)
        if self.metrics is not None and not forwarded:  # a peer's question is the asking replica's request
            self.metrics.edge_checks.labels(verdict.key.name if verdict.key else NONE, verdict.outcome).inc()
        return self.response(verdict, grpc_call)

    async def decide(self, http: Any, *, forwarded: bool = False) -> Verdict:
        """The verdict on the request ``http`` (an ``AttributeContext.HttpRequest``); ``forwarded``:
        a peer asks (it charged the key already; this replica only holds a place, or not)."""
        path = request_path(http.path)
        if path in PUBLIC_PATHS or (path == METRICS_PATH and not self.metrics_require_key):
            return Verdict("passed")
        key: ApiKey | None = None
        if self.keyring:
            token = bearer_token([("authorization", http.headers.get("authorization", ""))])
            key = self.keyring.find(token)
            if key is None:
                message = "missing API key: send the header 'authorization: Bearer <key>'" if token is None else ""
                return Verdict("unauthenticated", error=Unauthenticated(message or "invalid API key"))
        if path not in RERANK_PATHS:
            return Verdict("passed", key)
        if self.draining():
            return Verdict(contract.ADMITTED, key)
        if not forwarded:
            try:
                self.callers.for_key(key).admit()
            except RateLimited as exc:
                self._reject(NONE, "rate_limited")
                return Verdict("rate_limited", key, error=exc)
        # A native gRPC message's size is the client's to state or not: only a REST body is priced.
        length = http.headers.get("content-length", "")
        priced = length.isdigit() and not is_grpc(http.headers.get("content-type", ""))
        if priced and self.max_request_bytes is not None and int(length) > self.max_request_bytes:
            return Verdict(contract.ADMITTED, key)
        return await self._admit(http, key, int(length) if priced else None, forwarded)

    async def _admit(self, http: Any, key: ApiKey | None, size: int | None, forwarded: bool) -> Verdict:
        """Holds a place for a body of ``size`` bytes (None: unknown) here, or at a peer."""
        open_models = [m for m in self.models.values() if not m.batcher.stalled]
        room: dict[str, float] = {}
        refusals: list[tuple[QueueFull, ServedModel, str]] = []
        for model in open_models:
            if size is None:
                break
            refusal, cost, reason = model.early_refusal(size)
            if refusal is None:
                room[model.name] = cost
            else:
                refusals.append((refusal, model, reason))
        if open_models and (room or not refusals):
            held = self.callers.holds.place(identity(key), room)
            headers = {contract.HOLD_HEADER: held}
            if self.pin:
                headers[contract.REPLICA_HEADER] = self.pin
            outcome = contract.HELD if room else contract.ADMITTED
            return Verdict(outcome, key, headers, checks=1 if size is not None else 0)
        error: RerankError
        refused: tuple[str, str] | None = None
        if refusals:
            error, model, reason = min(refusals, key=lambda refusal: refusal[0].retry_after or 0)
            refused = (model.name, reason)
        else:
            error = Unavailable("inference is stuck on this replica; retry the request", reason="STALLED")
        outcome = contract.REFUSED if refusals else contract.UNAVAILABLE
        if not forwarded:
            peer = await self._ask_peer(http)
            headers = {h.header.key: h.header.value for h in peer.ok_response.headers} if peer is not None else {}
            if contract.HOLD_HEADER in headers:
                return Verdict(contract.HELD, key, headers, checks=2)
            if peer is not None and peer.HasField("denied_response") and isinstance(error, QueueFull):
                delay = _retry_after(peer.denied_response)
                if delay is not None and delay < (error.retry_after or 0):
                    error.retry_after = delay
            if refused is not None:  # counted once, here: a peer does not count what it was asked
                self._reject(*refused)
        return Verdict(outcome, key, error=error, checks=1 + bool(self.peers and not forwarded))

    async def _ask_peer(self, http: Any) -> external_auth_pb2.CheckResponse | None:
        """The next peer's verdict on ``http`` (asked in turn), or None if none answered in time."""
        if not self.peers:
            return None
        self._turn = (self._turn + 1) % len(self.peers)
        address = self.peers[self._turn]
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        request = external_auth_pb2.CheckRequest()
        request.attributes.request.http.CopyFrom(http)
        try:
            response: external_auth_pb2.CheckResponse = await stub.Check(
                request, metadata=((contract.PEER_HEADER, self.peer_secret),), timeout=PEER_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            log.debug("peer %s did not answer the check: %s", address, exc)
            return None
        return response

    def _forwarded(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        """The call is a peer's (it presents the stack's shared secret)."""
        if not self.peer_secret:
            return False
        for name, value in context.invocation_metadata() or ():
            if name == contract.PEER_HEADER:
                text = value if isinstance(value, str) else value.decode("latin-1")
                return secrets.compare_digest(text.encode(), self.peer_secret.encode())
        return False

    def _reject(self, model: str, reason: str) -> None:
        served = self.models.get(model)
        if served is not None:
            served.metrics.reject(reason)
        elif self.metrics is not None:
            self.metrics.rejected.labels(model, reason).inc()

    def response(self, verdict: Verdict, grpc_call: bool) -> external_auth_pb2.CheckResponse:
        metadata = struct_pb2.Struct()
        if verdict.key is not None:
            metadata.update({contract.KEY_METADATA: verdict.key.name})
        if verdict.outcome in contract.OUTCOMES:
            metadata.update({contract.ADMISSION_METADATA: verdict.outcome})
        if verdict.checks:
            metadata.update({contract.CHECKS_METADATA: str(verdict.checks)})
        if verdict.error is None:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=grpc.StatusCode.OK.value[0]),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[header(k, v) for k, v in verdict.headers.items()]
                ),
                dynamic_metadata=metadata,
            )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=status_code(verdict.error).value[0], message=verdict.error.message),
            denied_response=denial(verdict.error, grpc_call),
            dynamic_metadata=metadata,
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def denial(error: RerankError, grpc_call: bool) -> external_auth_pb2.DeniedHttpResponse:
    """The reply Envoy sends for ``error``: the service's own JSON error, or for a native gRPC call
    its status, message and details (``grpc-status-details-bin``), as the service would answer."""
    code = status_code(error)
    retry_after = getattr(error, "retry_after", None)
    headers = [header("retry-after", str(retry_after))] if retry_after is not None else []
    if isinstance(error, QueueFull):
        headers.append(header(contract.EARLY_HEADER, contract.EARLY))
    if grpc_call:
        details = base64.b64encode(status_message(error).SerializeToString()).decode()
        headers += [header("grpc-status", str(code.value[0])), header("grpc-status-details-bin", details)]
        body = error.message
    else:
        headers.append(header("content-type", "application/json"))
        body = json.dumps(status_json(error), separators=(",", ":"))
    return external_auth_pb2.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=HTTP_STATUS[code]), headers=headers, body=body
    )


def _retry_after(denied: external_auth_pb2.DeniedHttpResponse) -> int | None:
    for option in denied.headers:
        if option.header.key == "retry-after" and option.header.value.isdigit():
            return int(option.header.value)
    return None
