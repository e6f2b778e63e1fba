"""Requests to the service, and the reference a face's answer is compared with."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_status import rpc_status

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


def _error_details(error: grpc.RpcError) -> list[Any]:
    """The unpacked ``google.rpc`` details of a failed call's rich status."""
    status = rpc_status.from_call(error)
    assert status is not None and status.message == error.details()
    unpacked: list[Any] = []
    for detail in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                unpacked.append(kind())
                detail.Unpack(unpacked[-1])
    assert len(unpacked) == len(status.details), "a detail of an unexpected type"
    return unpacked


def fields_of(error: grpc.RpcError) -> list[str]:
    """The fields a failed call's ``google.rpc.BadRequest`` names."""
    return [
        v.field
        for d in _error_details(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


def reasons_of(error: grpc.RpcError) -> list[str]:
    """The reasons of a failed call's ``google.rpc.ErrorInfo``."""
    return [d.reason for d in _error_details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
