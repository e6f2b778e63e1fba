"""The ``rerank.v1.RerankService`` servicer: validated requests in, ranked responses out.

Validation is :mod:`rerank.service.router.validation`; errors raised here or below are typed
(:mod:`rerank.service.errors`) and become statuses in :mod:`rerank.service.router.status`.
"""

from __future__ import annotations

from typing import Any

import grpc

from rerank.service.backends.cpu_features import CpuFeatures
from rerank.service.core.reranker import ServedModel
from rerank.service.errors import Unavailable
from rerank.service.model_folder import GATE_VERSION
from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc
from rerank.service.router.ranking import Ranker, RankRequest, instruction_of
from rerank.service.router.validation import document_texts, long_documents_mode


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
                instruction=instruction_of(request),
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
            default_instruction=model.encoder.template.prompt.default_instruction
            if model.encoder.template.prompt is not None
            else "",
            precision=model.backend.precision,
            provider=model.backend.provider,
            source=config.source_name,
            notes=list(config.notes),
            variant=model.backend.variant_key,
            runtime=config.variants[model.backend.variant_key].runtime,
            cpu=cpu_info(model.cpu),
            gate=variant_gate(config.variants[model.backend.variant_key].gate),
            selection=model.choice.reason,
            candidates=[
                rerank_pb2.VariantTiming(
                    variant=key,
                    runtime=config.variants[key].runtime,
                    precision=config.variants[key].precision,
                    milliseconds=ms,
                )
                for key, ms in model.choice.milliseconds.items()
            ],
            batching=rerank_pb2.BatchingInfo(
                max_batch_tokens=batching.max_batch_tokens,
                max_batch_pairs=batching.max_batch_pairs,
                max_queue_pairs=batching.max_queue_pairs,
                max_documents=self.limits.max_documents,
                batch_tokens=model.batcher.batch_tokens,
                streams=model.batcher.streams,
                sizing=model.sizing.reason if model.sizing else "",
                timed=[
                    rerank_pb2.BatchSizeTiming(tokens=tokens, tokens_per_second=rate)
                    for tokens, rate in (model.sizing.measured.items() if model.sizing else ())
                ],
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
        stuck = sorted(f"{m.name}: {m.batcher.stall_reason}" for m in self.models.values() if m.batcher.stall_reason)
        if stuck:
            raise Unavailable(f"inference is stuck ({'; '.join(stuck)})", reason="STALLED")
        return rerank_pb2.HealthResponse(status="ok", models=sorted(self.models))


__all__ = ["RerankService"]


def cpu_info(cpu: CpuFeatures | None) -> rerank_pb2.CpuInfo | None:
    """The card's ``cpu``; None where the server did not look (a CUDA-only card keeps it too)."""
    if cpu is None:
        return None
    return rerank_pb2.CpuInfo(
        model=cpu.model, features=cpu.flags(), amx=cpu.amx, native_bf16=cpu.native_bf16, native_int8=cpu.native_int8
    )


def variant_gate(figures: dict[str, Any]) -> rerank_pb2.VariantGate | None:
    """The card's ``gate`` from ``Variant.gate``: only a gate of the current version (older
    folders recorded a 13-probe Spearman that these fields do not describe)."""
    if figures.get("version") != GATE_VERSION:
        return None
    thresholds = figures.get("thresholds", {})
    return rerank_pb2.VariantGate(
        passed=bool(figures["passed"]),
        pairs=int(figures["pairs"]),
        queries=int(figures["queries"]),
        min_spearman=float(figures["min_spearman"]),
        top3_kept=bool(figures["all_top3_kept"]),
        min_top10_agreement=float(figures["min_top10_agreement"]),
        max_abs_diff=float(figures["max_abs_diff"]),
        max_rel_diff=float(figures["max_rel_diff"]),
        min_spearman_required=float(thresholds.get("min_spearman", 0.0)),
        max_abs_diff_allowed=float(thresholds.get("max_abs_diff", 0.0)),
    )
