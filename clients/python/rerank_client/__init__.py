"""A small typed client for rerank's gRPC API (``rerank.v1.RerankService``).

:class:`RerankClient` (blocking, ``grpc``) and :class:`AsyncRerankClient` (``grpc.aio``) send the
API key as ``authorization: Bearer`` metadata, give every call a deadline, retry UNAVAILABLE with
exponential backoff (:class:`Retry`), and return plain dataclasses (:mod:`rerank_client.results`).
The ``rerank`` command (:mod:`rerank_client.cli`) is built on it.

    from rerank_client import RerankClient

    with RerankClient("localhost:50051", api_key="...") as client:
        for r in client.rerank("What is a panda?", ["hi", "it is a bear"], model="bge-reranker-v2-m3").results:
            print(r.index, r.score)
"""

from __future__ import annotations

from rerank_client.aio import AsyncRerankClient
from rerank_client.client import RerankClient
from rerank_client.results import Model, RankedDocument, RerankResult
from rerank_client.retry import Retry

__all__ = ["AsyncRerankClient", "Model", "RankedDocument", "RerankClient", "RerankResult", "Retry"]
