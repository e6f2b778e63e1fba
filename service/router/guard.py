"""The guard around every handler call: counted while in flight, errors turned into statuses,
and reported (metrics, the call's log context, its trace span).

:class:`CallGuard` wraps each unary-response handler (unary and client-streaming) of every
service on the server. While a call runs it is counted, so a stopping server can wait for the
calls in flight (:meth:`CallGuard.wait_idle`); whatever it raises goes through
:func:`rerank.service.router.status.fail` (typed errors -> rich statuses, anything else -> an opaque
INTERNAL with a request id). A request that does not decode (a cut or corrupted message, a string
field that is not UTF-8) is the client's error, INVALID_ARGUMENT, like any other bad request:
gRPC's own answer would be UNKNOWN with the decoder's exception in its message.

It is the first interceptor, ahead of API-key checks, so that refused calls (UNAUTHENTICATED)
are counted too. For each call it:

* opens the call's :class:`~rerank.service.telemetry.context.Call` (request id, key name; the model
  once validation resolves it), which every log line under the handler carries;
* runs the handler inside the call's server span (:mod:`rerank.service.telemetry.tracing`), the child
  of the client's ``traceparent``;
* records ``rerank_requests_total`` and ``rerank_request_duration_seconds`` and logs one debug
  line with the status code. Health checks (Envoy's, Kubernetes') and the edge's checks (one per
  request through Envoy, counted by ``rerank_edge_checks_total``) are not metered.

It sends no response headers of its own: Envoy cannot retry a call whose response headers started.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from rerank.service.admission.contract import CHECK_METHOD
from rerank.service.core.metrics import NONE, Metrics
from rerank.service.errors import InvalidRequest, RerankError
from rerank.service.router.auth import Keyring
from rerank.service.router.status import fail, request_id, status_code
from rerank.service.telemetry import context as calls
from rerank.service.telemetry import tracing
from rerank.service.telemetry.context import Call

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

UNMETERED = ("/grpc.health.v1.Health/", CHECK_METHOD)
"""Calls under these prefixes (probes, every second; the edge's check of every request) are
guarded but neither counted nor logged."""


class Undecodable:
    """What a guarded handler receives, instead of a message, for bytes that do not decode."""

    def __init__(self, method: str) -> None:
        self.method = method

    def error(self) -> InvalidRequest:
        return InvalidRequest(
            f"the request is not a valid message for {self.method}: its bytes do not decode (a cut or "
            "corrupted message, a field of the wrong wire type, or a string that is not UTF-8)",
            reason="UNDECODABLE_MESSAGE",
        )


def tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning :class:`Undecodable` where it would raise."""
    if deserializer is None:
        return None
    decode = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:  # noqa: BLE001 - DecodeError, and whatever else a decoder raises on bad bytes
            return Undecodable(method)

    return deserialize


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.error()
        yield request


class CallGuard(grpc.aio.ServerInterceptor):
    """Counts calls in flight, maps their errors and reports them."""

    def __init__(self, keyring: Keyring | None = None, metrics: Metrics | None = None) -> None:
        self.in_flight = 0
        self.keyring = keyring or Keyring([])
        self.metrics = metrics
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no call is in flight; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def _call(self, behaviour: Callable[..., Any], request: Any, context: Context, method: str) -> Any:
        self._enter()
        started = time.monotonic()
        metadata = context.invocation_metadata()
        caller = self.keyring.caller(metadata) if self.keyring else None
        call = Call(method, request_id(context), key=caller.name if caller else "")
        token = calls.enter(call)
        metered = self.metrics is not None and not method.startswith(UNMETERED)
        if metered:
            cast(Metrics, self.metrics).in_flight.inc()
        code = grpc.StatusCode.OK
        try:
            with tracing.server_span(method, metadata) as span:
                try:
                    if isinstance(request, Undecodable):
                        raise request.error()
                    result = behaviour(request, context)
                    return await result if inspect.isawaitable(result) else result
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except grpc.RpcError:
                    code = grpc.StatusCode.UNKNOWN
                    raise
                except Exception as exc:  # noqa: BLE001 - every error becomes a status
                    code = status_code(exc) if isinstance(exc, RerankError) else grpc.StatusCode.INTERNAL
                    await fail(context, exc, method)
                finally:
                    span.finish(_span_attributes(call, code), error=code != grpc.StatusCode.OK)
        finally:
            if metered:
                self._report(call, code, time.monotonic() - started)
            calls.leave(token)
            self._leave()

    def _report(self, call: Call, code: grpc.StatusCode, seconds: float) -> None:
        metrics = cast(Metrics, self.metrics)
        model = call.model or NONE
        metrics.in_flight.dec()
        metrics.requests.labels(call.method, model, call.key or NONE, code.name).inc()
        metrics.request_duration.labels(call.method, model).observe(seconds)
        # Still inside the call's context: the line carries its request id, key name and model.
        log.debug("%s %s in %.1f ms", call.method, code.name, seconds * 1000)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.response_streaming:
            return handler
        method = handler_call_details.method
        if handler.request_streaming:
            # grpc.aio calls these with its own context and, for streams, an async iterator.
            stream = cast(Callable[..., Any], handler.stream_unary)

            async def guarded_stream(requests: AsyncIterator[Any], context: Context) -> Any:
                return await self._call(stream, _decoded(requests), context, method)

            return grpc.stream_unary_rpc_method_handler(
                guarded_stream,
                request_deserializer=tolerant(handler.request_deserializer, method),
                response_serializer=handler.response_serializer,
            )
        unary = cast(Callable[..., Any], handler.unary_unary)

        async def guarded(request: Any, context: Context) -> Any:
            return await self._call(unary, request, context, method)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=tolerant(handler.request_deserializer, method),
            response_serializer=handler.response_serializer,
        )


def _span_attributes(call: Call, code: grpc.StatusCode) -> tracing.Attributes:
    return {
        "rerank.request_id": call.request_id,
        "rerank.model": call.model or NONE,
        "rerank.key": call.key or NONE,
        "rpc.grpc.status_code": code.value[0],
    }
