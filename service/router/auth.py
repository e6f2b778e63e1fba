"""API-key authentication for every RPC except health checks.

Clients send ``authorization: Bearer <key>`` (gRPC metadata, or the HTTP header that Envoy
forwards as metadata). Keys are held only as SHA-256 digests and compared in constant time;
a key is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

PUBLIC_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/rerank.v1.RerankService/Health",
    }
)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def load_key_digests(keys: tuple[str, ...], keys_file: Path | None) -> list[bytes]:
    """Digests of the accepted keys: plain keys from the environment, hex digests from a file.

    The file holds one SHA-256 hex digest per line (``sha256sum``-style lines work: only the
    first field is read); blank lines and ``#`` comments are skipped.
    """
    digests = [digest(k) for k in keys]
    if keys_file is not None:
        for number, line in enumerate(keys_file.read_text().splitlines(), 1):
            field = line.split("#", 1)[0].strip().split()
            if not field:
                continue
            try:
                value = bytes.fromhex(field[0])
            except ValueError:
                value = b""
            if len(value) != 32:
                raise ValueError(f"{keys_file}:{number}: not a SHA-256 hex digest")
            digests.append(value)
    return digests


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry (scheme case-insensitive)."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without a valid key with UNAUTHENTICATED before they reach a handler."""

    def __init__(self, digests: list[bytes]) -> None:
        if not digests:
            raise ValueError("no API keys configured")
        self._digests = list(digests)

    def is_valid(self, token: str | None) -> bool:
        if token is None:
            return False
        presented = digest(token)
        # Compare against every key, without stopping early, so timing says nothing about which matched.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(presented, known)
        return matched

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method in PUBLIC_METHODS:
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        if self.is_valid(token):
            return await continuation(handler_call_details)
        message = (
            "missing API key: send the header 'authorization: Bearer <key>'" if token is None else "invalid API key"
        )
        handler = await continuation(handler_call_details)
        return _deny(handler, message)


def _deny(handler: grpc.RpcMethodHandler[Any, Any] | None, message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same streaming shape as ``handler`` that aborts UNAUTHENTICATED."""

    async def abort(request_or_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_stream_rpc_method_handler(abort)
