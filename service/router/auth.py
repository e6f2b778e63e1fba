"""API-key authentication for every RPC except health checks and the edge's check.

Clients send ``authorization: Bearer <key>`` (gRPC metadata, or the HTTP header that Envoy
forwards as metadata). Keys are held only as SHA-256 digests and compared in constant time;
a key is never logged, nor anything derived from it: a key the keys file does not name is
named by its place among the accepted keys (``key-1``, ``key-2``, ...).

The edge's check (``envoy.service.auth.v3.Authorization/Check``, :mod:`rerank.service.router.edge`)
needs no key of its own: it checks the key of the request it is asked about, and answers only
for that key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from rerank.service.admission.contract import CHECK_METHOD

log = logging.getLogger(__name__)

PUBLIC_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/rerank.v1.RerankService/Health",
        CHECK_METHOD,
    }
)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its digest, the name logs and metrics show, and its limits."""

    digest: bytes
    name: str
    requests_per_second: float | None = None
    tokens_per_minute: int | None = None


def default_name(index: int) -> str:
    """The name of the ``index``-th accepted key (from 1) when nothing names it: its place, never
    anything derived from the key (a dictionary would reverse a weak key from its digest)."""
    return f"key-{index}"


def parse_keys_file(text: str, source: str = "keys file", first: int = 1) -> list[ApiKey]:
    """A keys file: one key per line, ``<sha256 hex> [name=NAME] [rps=N] [tpm=N]``; a key
    without a name is named by its place (:func:`default_name`, counting from ``first``).

    Plain digest lines (and ``sha256sum`` output: only the first field is a digest when the
    rest is not ``key=value``) keep working; blank lines and ``#`` comments are skipped.
    Raises ``ValueError`` naming the line."""
    keys: list[ApiKey] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            value = bytes.fromhex(fields[0])
        except ValueError:
            value = b""
        if len(value) != 32:
            raise ValueError(f"{source}:{number}: not a SHA-256 hex digest")
        options = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        unknown = set(options) - {"name", "rps", "tpm"}
        if unknown:
            raise ValueError(f"{source}:{number}: unknown field {sorted(unknown)[0]!r} (name, rps, tpm)")
        try:
            rps = float(options["rps"]) if "rps" in options else None
            tpm = int(options["tpm"]) if "tpm" in options else None
        except ValueError:
            raise ValueError(f"{source}:{number}: rps and tpm must be numbers") from None
        if (rps is not None and rps <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError(f"{source}:{number}: rps and tpm must be positive")
        keys.append(ApiKey(value, options.get("name") or default_name(first + len(keys)), rps, tpm))
    return keys


class Keyring:
    """The accepted keys. Looks a presented key up in constant time, whichever key it is."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = list(keys)

    @classmethod
    def load(cls, keys: tuple[str, ...], keys_file: Path | None) -> Keyring:
        """Plain keys (from the environment), then a keys file of digests; unnamed keys are
        ``key-1``, ``key-2``, ... in that order."""
        found = [ApiKey(digest(k), default_name(i)) for i, k in enumerate(keys, 1)]
        if keys_file is not None:
            found += parse_keys_file(keys_file.read_text(), str(keys_file), first=len(found) + 1)
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def find(self, token: str | None) -> ApiKey | None:
        if token is None:
            return None
        presented = digest(token)
        # Compare with every key, without stopping early: timing says nothing about which matched.
        match = None
        for key in self.keys:
            if hmac.compare_digest(presented, key.digest):
                match = key
        return match

    def caller(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> ApiKey | None:
        """The key a call presented (None without a valid one)."""
        return self.find(bearer_token(metadata))


def load_key_digests(keys: tuple[str, ...], keys_file: Path | None) -> list[bytes]:
    """Digests of the accepted keys (see :meth:`Keyring.load`)."""
    return [k.digest for k in Keyring.load(keys, keys_file).keys]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
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

    def __init__(self, keyring: Keyring) -> None:
        if not keyring:
            raise ValueError("no API keys configured")
        self.keyring = keyring

    def is_valid(self, token: str | None) -> bool:
        return self.keyring.find(token) is not None

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
