"""Requests to the service, and the reference a face's answer is compared with."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import httpx

from tests.support import QUERY


def rerank_request(model: str, documents: Iterable[str | dict[str, Any]], query: str = QUERY, **fields: Any) -> Any:
    """A ``rerank.v1.RerankRequest``; a dict document becomes a ``{"text": ...}`` struct."""
    from rerank.service.protocol import rerank_pb2

    request = rerank_pb2.RerankRequest(model=model, query=query, **fields)
    for document in documents:
        if isinstance(document, dict):
            request.documents.add().struct_value.update(document)
        else:
            request.documents.add().string_value = document
    return request


def sigmoid(x: float) -> float:
    """The logistic function, written here (not imported from the service) for parity checks."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def jina_logits(rest: httpx.Client, model: str, query: str, documents: list[str]) -> dict[int, float]:
    """index -> raw logit from ``POST /v1/rerank``: the face every other face is compared with."""
    response = rest.post("/v1/rerank", json={"model": model, "query": query, "documents": documents})
    assert response.status_code == 200, response.text
    return {r["index"]: r["relevance_score"] for r in response.json()["results"]}


def best_first(scores: dict[int, float]) -> list[int]:
    """Indexes by score, descending, ties by index (the service's documented order)."""
    return sorted(scores, key=lambda i: (-scores[i], i))
