"""The blocking client (``grpc``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc
from rerank_client.results import Model, RerankResult, models, rerank_result
from rerank_client.retry import DEFAULT_RETRY, Retry, deadline, remaining

API_KEY_ENV = "RERANK_API_KEY"
"""The environment variable the key is read from when none is given."""


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying ``api_key`` (or ``$RERANK_API_KEY``)."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return (("authorization", f"Bearer {key}"),) if key else ()


def rerank_request(
    query: str,
    documents: Sequence[str],
    *,
    model: str,
    top_n: int | None,
    return_documents: bool,
    normalize: bool,
    instruction: str | None = None,
) -> rerank_pb2.RerankRequest:
    request = rerank_pb2.RerankRequest(model=model, query=query, return_documents=return_documents, normalize=normalize)
    if top_n is not None:
        request.top_n = top_n
    if instruction is not None:
        request.instruction = instruction
    for document in documents:
        request.documents.add().string_value = document
    return request


class RerankClient:
    """Blocking client of ``rerank.v1.RerankService`` at ``target`` (``host:port``: the service,
    or Envoy's listener, which carries native gRPC too)."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: Retry = DEFAULT_RETRY,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._channel = channel if channel is not None else grpc.insecure_channel(target)
        self._stub = rerank_pb2_grpc.RerankServiceStub(self._channel)
        self._metadata = metadata(api_key)
        self.timeout = timeout
        self.retry = retry

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        model: str = "",
        top_n: int | None = None,
        return_documents: bool = False,
        normalize: bool = False,
        instruction: str | None = None,
        timeout: float | None = None,
    ) -> RerankResult:
        """Ranks ``documents`` for ``query``, best first; raises ``grpc.RpcError``. ``instruction``
        replaces the model's default instruction, for a model that reads one (an LLM reranker); a
        model that takes none refuses it (``INVALID_ARGUMENT``)."""
        request = rerank_request(
            query,
            documents,
            model=model,
            top_n=top_n,
            return_documents=return_documents,
            normalize=normalize,
            instruction=instruction,
        )
        return rerank_result(self._call(self._stub.Rerank, request, timeout))

    def list_models(self, *, timeout: float | None = None) -> list[Model]:
        return models(self._call(self._stub.ListModels, rerank_pb2.ListModelsRequest(), timeout))

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        # One deadline for the whole call, retries included.
        until = deadline(timeout if timeout is not None else self.timeout)
        attempt = 1
        while True:
            try:
                return method(request, metadata=self._metadata, timeout=remaining(until))
            except grpc.RpcError as error:
                pause = self.retry.pause(error, attempt, until)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
