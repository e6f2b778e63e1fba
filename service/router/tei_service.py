"""Text Embeddings Inference's faces: its gRPC API (``tei.v1.Rerank``, ``tei.v1.Info``) and its
REST API through Envoy (``rerank.v1.TeiService``: ``POST /rerank``, ``GET /info``).

Same core as every face (:func:`rerank.service.router.ranking.rank_request`), in TEI's terms: ``texts``,
``raw_scores`` (default false: ``sigmoid(logit)``), ``return_text``, ``truncate`` (false: a text
over the window is an error, not cut) and ``truncation_direction`` (which end is cut), plus our
``instruction`` extension, as on every face. TEI's API names no model: these faces serve
``default_model`` (the default-model setting), or the only model when one is served.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2

from rerank.service import __version__
from rerank.service.core.reranker import ServedModel
from rerank.service.core.tokenization import TruncationSide
from rerank.service.protocol import tei_pb2, tei_pb2_grpc, tei_rest_pb2, tei_rest_pb2_grpc
from rerank.service.router.limits import Callers
from rerank.service.router.ranking import Ranking, RankRequest, instruction_of, rank_call
from rerank.service.router.validation import Limits, resolve_model, truncation_side

Context = grpc.aio.ServicerContext[Any, Any]

_SIDES: dict[int, TruncationSide] = {
    tei_pb2.TRUNCATION_DIRECTION_RIGHT: "right",
    tei_pb2.TRUNCATION_DIRECTION_LEFT: "left",
}


@dataclass(frozen=True)
class TeiFace:
    """What the TEI faces share: the models, the limits and the model they serve by default."""

    models: dict[str, ServedModel]
    limits: Limits
    default_model: str = ""
    tokenizer_threads: int = 1
    callers: Callers = field(default_factory=Callers)

    async def rank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        context: Context,
        truncate: bool,
        side: TruncationSide,
        raw_scores: bool,
        model: str = "",
        instruction: str | None = None,
    ) -> Ranking:
        return await rank_call(
            self.models,
            self.limits,
            self.callers,
            context,
            RankRequest(
                model=model,
                query=query,
                documents=list(texts),
                normalize=not raw_scores,
                long_documents="truncate" if truncate else "reject",
                side=side,
                documents_field="texts",
                default_model=self.default_model,
                instruction=instruction,
            ),
        )

    def model(self) -> ServedModel:
        return resolve_model(self.models, "", self.default_model)


class TeiRerank(tei_pb2_grpc.RerankServicer):
    """``tei.v1.Rerank``: TEI's gRPC rerank, unary and client-streaming."""

    def __init__(self, face: TeiFace) -> None:
        self.face = face

    async def Rerank(self, request: tei_pb2.RerankRequest, context: Context) -> tei_pb2.RerankResponse:
        started = time.perf_counter_ns()
        ranking = await self.face.rank(
            request.query,
            request.texts,
            context=context,
            truncate=request.truncate,
            side=_SIDES.get(request.truncation_direction, "right"),
            raw_scores=request.raw_scores,
            instruction=instruction_of(request),
        )
        return _grpc_response(ranking, request.return_text, started)

    async def RerankStream(
        self, request_iterator: AsyncIterator[tei_pb2.RerankStreamRequest], context: Context
    ) -> tei_pb2.RerankResponse:
        started = time.perf_counter_ns()
        first: tei_pb2.RerankStreamRequest | None = None
        texts: list[str] = []
        async for message in request_iterator:
            # As TEI: the query, truncation and score options (and instruction) come from the first message.
            first = first or message
            texts.append(message.text)
        first = first or tei_pb2.RerankStreamRequest()
        ranking = await self.face.rank(
            first.query,
            texts,
            context=context,
            truncate=first.truncate,
            side=_SIDES.get(first.truncation_direction, "right"),
            raw_scores=first.raw_scores,
            instruction=instruction_of(first),
        )
        return _grpc_response(ranking, first.return_text, started)


def _grpc_response(ranking: Ranking, return_text: bool, started: int) -> tei_pb2.RerankResponse:
    ranks = [
        tei_pb2.Rank(index=r.index, score=r.score, text=ranking.texts[r.index] if return_text else None)
        for r in ranking.results
    ]
    metadata = tei_pb2.Metadata(
        compute_chars=sum(len(t) for t in ranking.texts),
        compute_tokens=ranking.tokens,
        total_time_ns=time.perf_counter_ns() - started,
    )
    return tei_pb2.RerankResponse(ranks=ranks, metadata=metadata)


class TeiInfo(tei_pb2_grpc.InfoServicer):
    """``tei.v1.Info``: the model the TEI faces serve, and the limits."""

    def __init__(self, face: TeiFace) -> None:
        self.face = face

    async def Info(self, request: tei_pb2.InfoRequest, context: Context) -> tei_pb2.InfoResponse:
        model = self.face.model()
        batching = model.batcher.config
        return tei_pb2.InfoResponse(
            version=__version__,
            model_id=model.name,
            model_dtype=model.backend.precision,
            model_type=tei_pb2.MODEL_TYPE_RERANKER,
            max_concurrent_requests=batching.max_queue_pairs,
            max_input_length=model.config.max_length,
            max_batch_tokens=batching.max_batch_tokens,
            max_batch_requests=batching.max_batch_pairs,
            max_client_batch_size=self.face.limits.max_documents,
            tokenization_workers=self.face.tokenizer_threads,
        )


class TeiRest(tei_rest_pb2_grpc.TeiServiceServicer):
    """``rerank.v1.TeiService``: TEI's REST shapes, served by Envoy's transcoder."""

    def __init__(self, face: TeiFace) -> None:
        self.face = face
        self.info = TeiInfo(face)

    async def Rerank(self, request: tei_rest_pb2.TeiRerankRequest, context: Context) -> tei_rest_pb2.TeiRerankResponse:
        side = truncation_side(request.truncation_direction)
        ranking = await self.face.rank(
            request.query,
            request.texts,
            context=context,
            # TEI serves with --auto-truncate on by default: an absent `truncate` cuts.
            truncate=request.truncate if request.HasField("truncate") else True,
            side=side,
            raw_scores=request.raw_scores,
            model=request.model,
            instruction=instruction_of(request),
        )
        ranks = [
            tei_rest_pb2.TeiRank(
                index=r.index, score=r.score, text=ranking.texts[r.index] if request.return_text else None
            )
            for r in ranking.results
        ]
        return tei_rest_pb2.TeiRerankResponse(ranks=ranks)

    async def Info(self, request: tei_rest_pb2.TeiInfoRequest, context: Context) -> tei_rest_pb2.TeiInfoResponse:
        info = await self.info.Info(tei_pb2.InfoRequest(), context)
        null = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
        model_type = struct_pb2.Struct()
        # A one-logit reranker, as TEI describes it.
        model_type.update({"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}})
        return tei_rest_pb2.TeiInfoResponse(
            version=info.version,
            sha=null,
            docker_label=null,
            model_id=info.model_id,
            model_sha=null,
            model_dtype=info.model_dtype,
            model_type=model_type,
            max_concurrent_requests=info.max_concurrent_requests,
            max_input_length=info.max_input_length,
            max_batch_tokens=info.max_batch_tokens,
            max_batch_requests=info.max_batch_requests,
            max_client_batch_size=info.max_client_batch_size,
            tokenization_workers=info.tokenization_workers,
        )


__all__ = ["TeiFace", "TeiInfo", "TeiRerank", "TeiRest"]
