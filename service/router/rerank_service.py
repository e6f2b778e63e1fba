"""The ``rerank.v1.RerankService`` servicer: validated requests in, ranked responses out.

Validation is :mod:`service.router.validation`; errors raised here or below are typed
(:mod:`service.errors`) and become statuses in :mod:`service.router.status`.
"""

from __future__ import annotations

from typing import Any

import grpc

from service.core.reranker import ServedModel
from service.protocol import rerank_pb2, rerank_pb2_grpc
from service.router.ranking import Ranker, RankRequest
from service.router.validation import document_texts, long_documents_mode


class RerankService(Ranker, rerank_pb2_grpc.RerankServiceServicer):
    """Answers Rerank, ListModels and Health for a fixed set of loaded models."""

    async def Rerank(
        self, request: rerank_pb2.RerankRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rerank_pb2.RerankResponse:
        mode = long_documents_mode(request.long_documents)
        ranking = await self.rank(
            context,
            RankRequest(
                model=request.model,
                query=request.query,
                documents=request.documents,
                texts=document_texts,
                top_n=request.top_n if request.HasField("top_n") else None,
                normalize=request.normalize if request.HasField("normalize") else False,
                long_documents=mode,
            ),
        )
        return_documents = request.return_documents if request.HasField("return_documents") else True
        texts = ranking.texts
        results = [
            rerank_pb2.RerankResult(
                index=r.index,
                relevance_score=r.score,
                truncated_tokens=r.truncated_tokens,
                windows=r.windows,
                document=rerank_pb2.ResultDocument(text=texts[r.index]) if return_documents else None,
            )
            for r in ranking.results
        ]
        tokens = ranking.tokens
        return rerank_pb2.RerankResponse(
            model=ranking.model.name,
            object="list",
            results=results,
            usage=rerank_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def ListModels(
        self, request: rerank_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rerank_pb2.ListModelsResponse:
        return rerank_pb2.ListModelsResponse(object="list", data=[self.card(m) for m in self.models.values()])

    def card(self, model: ServedModel) -> rerank_pb2.ModelCard:
        config = model.config
        batching = model.batcher.config
        m = model.metrics
        return rerank_pb2.ModelCard(
            id=model.name,
            object="model",
            created=int(config.source.get("created", 0)),
            owned_by="rerank",
            max_length=config.max_length,
            architecture=config.architecture,
            precision=model.backend.precision,
            provider=model.backend.provider,
            source=config.source_name,
            notes=list(config.notes),
            variant=model.backend.variant_key,
            batching=rerank_pb2.BatchingInfo(
                max_batch_tokens=batching.max_batch_tokens,
                max_batch_pairs=batching.max_batch_pairs,
                max_queue_pairs=batching.max_queue_pairs,
                max_documents=self.limits.max_documents,
            ),
            stats=rerank_pb2.ModelStats(
                requests=m.requests,
                rejected_requests=m.rejected_requests,
                cancelled_requests=m.cancelled_requests,
                pairs=m.pairs,
                batches=m.batches,
                padding_fraction=m.padding_fraction,
                queued_pairs=m.queue_pairs,
            ),
        )

    async def Health(
        self, request: rerank_pb2.HealthRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> rerank_pb2.HealthResponse:
        return rerank_pb2.HealthResponse(status="ok", models=sorted(self.models))


__all__ = ["RerankService"]
