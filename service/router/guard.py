"""The guard around every handler call: counted while in flight, errors turned into statuses.

:class:`CallGuard` wraps each unary-response handler (unary and client-streaming) of every
service on the server. While a call runs it is counted, so a stopping server can wait for the
calls in flight (:meth:`CallGuard.wait_idle`); whatever it raises goes through
:func:`service.router.status.fail` (typed errors -> rich statuses, anything else -> an opaque
INTERNAL with a request id). A request that does not decode (a cut or corrupted message, a string
field that is not UTF-8) is the client's error, INVALID_ARGUMENT, like any other bad request:
gRPC's own answer would be UNKNOWN with the decoder's exception in its message.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from service.errors import InvalidRequest
from service.router.status import fail

Context = grpc.aio.ServicerContext[Any, Any]


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
    """Counts calls in flight and maps their errors."""

    def __init__(self) -> None:
        self.in_flight = 0
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
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result
        except (grpc.aio.AbortError, grpc.RpcError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            await fail(context, exc, method)
        finally:
            self._leave()

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
