"""The asyncio client (``grpc.aio``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc
from rerank_client.client import metadata, rerank_request
from rerank_client.results import Model, RerankResult, models, rerank_result
from rerank_client.retry import DEFAULT_RETRY, Retry, deadline, remaining


class AsyncRerankClient:
    """Asyncio client of ``rerank.v1.RerankService``; the same calls as
    :class:`~rerank_client.RerankClient`, awaited."""

    def __init__(
        self, target: str, *, api_key: str | None = None, timeout: float = 30.0, retry: Retry = DEFAULT_RETRY
    ) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = rerank_pb2_grpc.RerankServiceStub(self._channel)
        self._metadata = metadata(api_key)
        self.timeout = timeout
        self.retry = retry

    async def rerank(
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
        """Ranks ``documents`` for ``query``, best first; raises ``grpc.aio.AioRpcError``."""
        request = rerank_request(
            query,
            documents,
            model=model,
            top_n=top_n,
            return_documents=return_documents,
            normalize=normalize,
            instruction=instruction,
        )
        return rerank_result(await self._call(self._stub.Rerank, request, timeout))

    async def list_models(self, *, timeout: float | None = None) -> list[Model]:
        return models(await self._call(self._stub.ListModels, rerank_pb2.ListModelsRequest(), timeout))

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        until = deadline(timeout if timeout is not None else self.timeout)
        attempt = 1
        while True:
            try:
                return await method(request, metadata=self._metadata, timeout=remaining(until))
            except grpc.RpcError as error:
                pause = self.retry.pause(error, attempt, until)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRerankClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
