"""The ``rerank.v1.RerankService`` gRPC servicer: validation, dispatch to models, responses."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from service.core.batching import QueueFull
from service.core.model_folder import ModelFolderConfig
from service.core.reranker import ServedModel, rank
from service.core.tokenization import QueryTooLong
from service.protocol import rerank_pb2, rerank_pb2_grpc
from service.router.errors import ApiError, invalid
from service.settings import Limits

log = logging.getLogger(__name__)

LONG_DOCUMENT_MODES = ("truncate", "window")


def document_texts(values: Any) -> list[str]:
    """Each element must be a string or an object with a string ``text``; returns the texts."""
    texts: list[str] = []
    for i, value in enumerate(values):
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            texts.append(value.string_value)
            continue
        if kind == "struct_value":
            text = value.struct_value.fields.get("text")
            if text is not None and text.WhichOneof("kind") == "string_value":
                texts.append(text.string_value)
                continue
            raise invalid(f"documents[{i}]", f"documents[{i}] is an object without a string \"text\" field",
                          reason="BAD_DOCUMENT")
        shown = {"number_value": "a number", "bool_value": "a boolean", "null_value": "null",
                 "list_value": "a list"}.get(kind or "", "empty")
        raise invalid(f"documents[{i}]", f"documents[{i}] is {shown}; each document must be a string or "
                      "an object {\"text\": string}", reason="BAD_DOCUMENT")
    return texts


class RerankService(rerank_pb2_grpc.RerankServiceServicer):
    """Answers Rerank, ListModels and Health for a fixed set of loaded models."""

    def __init__(self, models: dict[str, ServedModel], limits: Limits) -> None:
        self.models = models
        self.limits = limits

    def resolve(self, name: str) -> ServedModel:
        if not name:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise invalid("model", f"several models are served; name one of: {', '.join(sorted(self.models))}",
                          reason="MODEL_REQUIRED")
        model = self.models.get(name)
        if model is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND,
                           f"model {name!r} is not served; served models: {', '.join(sorted(self.models))}",
                           reason="MODEL_NOT_FOUND", field="model")
        return model

    def validate(self, request: rerank_pb2.RerankRequest) -> tuple[ServedModel, list[str]]:
        model = self.resolve(request.model)
        if not request.query.strip():
            raise invalid("query", "query must be a non-empty string", reason="EMPTY_QUERY")
        if not request.documents:
            raise invalid("documents", "documents must be a non-empty list of strings or {\"text\": string} objects",
                          reason="NO_DOCUMENTS")
        if len(request.documents) > self.limits.max_documents:
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{len(request.documents)} documents in one request; the limit is {self.limits.max_documents}",
                           reason="TOO_MANY_DOCUMENTS", field="documents",
                           metadata={"limit": str(self.limits.max_documents)})
        if request.HasField("top_n") and request.top_n < 1:
            raise invalid("top_n", f"top_n must be at least 1 (got {request.top_n}); leave it out to get all documents",
                          reason="BAD_TOP_N")
        if request.long_documents not in ("",) + LONG_DOCUMENT_MODES:
            raise invalid("long_documents", f"long_documents must be one of {', '.join(LONG_DOCUMENT_MODES)} "
                          f"(got {request.long_documents!r})", reason="BAD_LONG_DOCUMENTS")
        return model, document_texts(request.documents)

    async def Rerank(self, request: rerank_pb2.RerankRequest, context: grpc.aio.ServicerContext) -> rerank_pb2.RerankResponse:
        try:
            model, texts = self.validate(request)
            try:
                scored = await model.score(request.query, texts, request.long_documents or "truncate")
            except QueryTooLong as exc:
                raise invalid("query", str(exc), reason="QUERY_TOO_LONG") from None
            except QueueFull as exc:
                raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), reason="QUEUE_FULL") from None
        except ApiError as err:
            await context.abort_with_status(err.to_status())  # raises: the handler ends here
            raise
        top_n = min(request.top_n, len(texts)) if request.HasField("top_n") else None
        return_documents = request.return_documents if request.HasField("return_documents") else True
        normalize = request.normalize if request.HasField("normalize") else False
        results = [
            rerank_pb2.RerankResult(
                index=r.index, relevance_score=r.score, truncated_tokens=r.truncated_tokens, windows=r.windows,
                document=rerank_pb2.ResultDocument(text=texts[r.index]) if return_documents else None,
            )
            for r in rank(scored, top_n, normalize)
        ]
        tokens = scored.encoded.total_tokens
        return rerank_pb2.RerankResponse(
            model=model.name, object="list", results=results,
            usage=rerank_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def ListModels(self, request: rerank_pb2.ListModelsRequest, context: grpc.aio.ServicerContext) -> rerank_pb2.ListModelsResponse:
        return rerank_pb2.ListModelsResponse(object="list", data=[self.card(m) for m in self.models.values()])

    def card(self, model: ServedModel) -> rerank_pb2.ModelCard:
        config: ModelFolderConfig = model.config
        batching = model.batcher.config
        m = model.metrics
        return rerank_pb2.ModelCard(
            id=model.name, object="model", created=int(config.source.get("created", 0)), owned_by="rerank",
            max_length=config.max_length, architecture=config.architecture, precision=model.backend.precision,
            provider=model.backend.provider, source=str(config.source.get("ref", "")),
            batching=rerank_pb2.BatchingInfo(
                max_batch_tokens=batching.max_batch_tokens, max_batch_pairs=batching.max_batch_pairs,
                max_queue_pairs=batching.max_queue_pairs, max_documents=self.limits.max_documents,
            ),
            notes=list(config.notes), variant=model.backend.variant_key,
            stats=rerank_pb2.ModelStats(
                requests=m.requests, rejected_requests=m.rejected_requests, cancelled_requests=m.cancelled_requests,
                pairs=m.pairs, batches=m.batches, padding_fraction=m.padding_fraction, queued_pairs=m.queue_pairs,
            ),
        )

    async def Health(self, request: rerank_pb2.HealthRequest, context: grpc.aio.ServicerContext) -> rerank_pb2.HealthResponse:
        return rerank_pb2.HealthResponse(status="ok", models=sorted(self.models))


__all__ = ["RerankService", "document_texts"]
