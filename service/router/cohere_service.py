"""The ``rerank.v1.CohereService`` servicer: Cohere's Rerank v2 (``POST /v2/rerank``).

Same core as every face (:func:`rerank.service.router.ranking.rank_request`); Cohere's contract is a
relevance score in [0, 1], so scores are ``sigmoid(logit)``. ``max_tokens_per_doc`` (default
4096) cuts each document before the model's own window applies; ``priority`` is accepted and
ignored (requests are served in arrival order); ``instruction`` is our extension, as on every face.
"""

from __future__ import annotations

from typing import Any

import grpc

from rerank.service.protocol import cohere_pb2, cohere_pb2_grpc
from rerank.service.router.ranking import Ranker, RankRequest, instruction_of
from rerank.service.router.status import request_id
from rerank.service.router.validation import check_max_tokens_per_doc

DEFAULT_MAX_TOKENS_PER_DOC = 4096
"""Cohere's default for ``max_tokens_per_doc``."""


class CohereService(Ranker, cohere_pb2_grpc.CohereServiceServicer):
    """Answers Cohere v2 rerank requests for a fixed set of loaded models."""

    async def Rerank(
        self, request: cohere_pb2.CohereRerankRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cohere_pb2.CohereRerankResponse:
        cap = check_max_tokens_per_doc(request.max_tokens_per_doc if request.HasField("max_tokens_per_doc") else None)
        ranking = await self.rank(
            context,
            RankRequest(
                model=request.model,
                query=request.query,
                documents=list(request.documents),
                top_n=request.top_n if request.HasField("top_n") else None,
                normalize=True,
                max_document_tokens=cap if cap is not None else DEFAULT_MAX_TOKENS_PER_DOC,
                instruction=instruction_of(request),
            ),
        )
        return cohere_pb2.CohereRerankResponse(
            id=request_id(context),
            results=[cohere_pb2.CohereResult(index=r.index, relevance_score=r.score) for r in ranking.results],
            meta=cohere_pb2.CohereMeta(
                api_version=cohere_pb2.CohereApiVersion(version="2"),
                billed_units=cohere_pb2.CohereBilledUnits(search_units=1),
                tokens=cohere_pb2.CohereTokens(input_tokens=ranking.tokens),
            ),
        )


__all__ = ["DEFAULT_MAX_TOKENS_PER_DOC", "CohereService"]
