"""The one "score a request" step that every face shares.

Each servicer (Jina's ``rerank.v1.RerankService``, Cohere's, TEI's REST and gRPC faces) turns
its request into a :class:`RankRequest` and calls :func:`rank_request`: the model is resolved
and the request validated by :mod:`rerank.service.router.validation`, the documents scored by
:meth:`ServedModel.score <rerank.service.core.reranker.ServedModel.score>` (the same batcher and model
for every face) and ordered by :func:`~rerank.service.core.reranker.rank`. Only the shapes differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from rerank.service.core.reranker import ANONYMOUS, Caller, Ranked, ServedModel, rank
from rerank.service.core.tokenization import LongDocuments, TruncationSide
from rerank.service.errors import DocumentTooLong
from rerank.service.router.limits import Callers
from rerank.service.router.status import request_id
from rerank.service.router.validation import (
    Limits,
    check_document_sizes,
    check_documents,
    check_instruction,
    check_query,
    check_top_n,
    resolve_model,
)
from rerank.service.telemetry import tracing


def instruction_of(request: Any) -> str | None:
    """A request's ``instruction`` (every face declares ``optional string instruction``), None when
    absent: the model's default then applies. Validated, and refused by a model that takes none,
    in :func:`rank_request`, the same for every face."""
    return str(request.instruction) if request.HasField("instruction") else None


def _as_texts(documents: Sequence[Any]) -> list[str]:
    return [str(d) for d in documents]


@dataclass(frozen=True)
class RankRequest:
    """What every face asks for, in the core's terms."""

    model: str
    query: str
    documents: Sequence[Any]
    """As the face received them; counted before :attr:`texts` turns them into strings."""
    texts: Callable[[Sequence[Any]], list[str]] = _as_texts
    """Validates and extracts each document's text (raising InvalidRequest for a bad one)."""
    top_n: int | None = None
    normalize: bool = False
    """Scores are sigmoid(logit) instead of the logit."""
    long_documents: LongDocuments = "truncate"
    max_document_tokens: int | None = None
    side: TruncationSide = "right"
    instruction: str | None = None
    """Replaces the model's default instruction (only models with a prompt take one)."""
    documents_field: str = "documents"
    """The face's name for the documents, used in error fields (TEI: ``texts``)."""
    default_model: str = ""
    """The model to use when the request names none (faces whose API has no model field)."""
    caller: Caller = ANONYMOUS
    """Who asks: the key's name (for fair scheduling) and its limits."""
    request_id: str = ""


@dataclass(frozen=True)
class Ranking:
    """A scored, ordered request: what each face formats."""

    model: ServedModel
    texts: list[str]
    results: list[Ranked]
    """Best first, cut to ``top_n``."""
    tokens: int
    """Tokens fed to the model, special tokens included, over all pairs."""


async def rank_request(models: Mapping[str, ServedModel], limits: Limits, request: RankRequest) -> Ranking:
    """Validates ``request``, scores it and ranks the results; raises typed errors
    (:mod:`rerank.service.errors`)."""
    field = request.documents_field
    with tracing.span("rerank.validate"):
        model = resolve_model(models, request.model, request.default_model)
        query = check_query(request.query, limits)
        instruction = check_instruction(request.instruction, limits)
        check_documents(len(request.documents), limits, field)
        top_n = check_top_n(request.top_n)
        texts = check_document_sizes(request.texts(request.documents), limits, field)
    try:
        scored = await model.score(
            query,
            texts,
            request.long_documents,
            caller=request.caller,
            request_id=request.request_id,
            max_document_tokens=request.max_document_tokens,
            side=request.side,
            instruction=instruction,
        )
    except DocumentTooLong as exc:
        exc.field = f"{field}[{exc.index}]"
        raise
    return Ranking(model, texts, rank(scored, top_n, request.normalize), scored.encoded.total_tokens)


class Ranker:
    """What every face's servicer ranks with: the served models, the request limits, the
    callers (API keys' names and limits) and the model a request that names none gets."""

    def __init__(
        self, models: dict[str, ServedModel], limits: Limits, callers: Callers | None = None, default_model: str = ""
    ) -> None:
        self.models = models
        self.limits = limits
        self.callers = callers or Callers()
        self.default_model = default_model

    async def rank(self, context: grpc.aio.ServicerContext[Any, Any], request: RankRequest) -> Ranking:
        """:func:`rank_request` on behalf of the call ``context``: its caller and request id."""
        request = replace(request, default_model=request.default_model or self.default_model)
        return await rank_call(self.models, self.limits, self.callers, context, request)


async def rank_call(
    models: Mapping[str, ServedModel],
    limits: Limits,
    callers: Callers,
    context: grpc.aio.ServicerContext[Any, Any],
    request: RankRequest,
) -> Ranking:
    """:func:`rank_request` for the call ``context``, as its caller (with what its edge check
    proved: :meth:`~rerank.service.router.limits.Callers.of`), under its request id."""
    caller = callers.of(context)
    return await rank_request(models, limits, replace(request, caller=caller, request_id=request_id(context)))
