"""What the client returns: plain, frozen dataclasses (no protobuf objects leak out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RankedDocument:
    """One result, best first in :attr:`RerankResult.results`."""

    index: int
    """Position of the document in the request."""
    score: float
    """The model's logit, or ``sigmoid(logit)`` with ``normalize=True``."""
    text: str | None
    """The document, when ``return_documents`` was asked for."""
    truncated_tokens: int
    windows: int


@dataclass(frozen=True)
class RerankResult:
    model: str
    results: list[RankedDocument]
    prompt_tokens: int
    """Tokens fed to the model, special tokens included."""


@dataclass(frozen=True)
class Model:
    """One served model, as ``ListModels`` describes it."""

    id: str
    max_length: int
    architecture: str
    precision: str
    provider: str
    variant: str


def rerank_result(reply: Any) -> RerankResult:
    """A ``rerank.v1.RerankResponse`` as a :class:`RerankResult`."""
    return RerankResult(
        model=reply.model,
        results=[
            RankedDocument(
                index=r.index,
                score=r.relevance_score,
                text=r.document.text if r.HasField("document") else None,
                truncated_tokens=r.truncated_tokens,
                windows=r.windows,
            )
            for r in reply.results
        ],
        prompt_tokens=reply.usage.prompt_tokens,
    )


def models(reply: Any) -> list[Model]:
    """A ``rerank.v1.ListModelsResponse`` as a list of :class:`Model`."""
    return [Model(m.id, m.max_length, m.architecture, m.precision, m.provider, m.variant) for m in reply.data]
