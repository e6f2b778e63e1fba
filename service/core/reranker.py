"""A served model: tokenization -> dynamic batching -> inference -> ranking.

:class:`ServedModel` ties one model folder's pair encoder, backend and batcher together and
answers "score these documents for this query". :func:`rank` turns scores into the ordered,
``top_n``-cut result list. Neither knows about gRPC or JSON.
"""

from __future__ import annotations

import asyncio
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.backends.base import Backend
from service.core.batching import BatchingConfig, DynamicBatcher
from service.core.metrics import ModelMetrics
from service.core.tokenization import EncodedRequest, LongDocuments, PairEncoder, TruncationSide
from service.model_folder import ModelFolderConfig


@dataclass(frozen=True)
class Scored:
    """Per-document outcome of one request."""

    scores: np.ndarray
    """float64 logit per document (the best window's, when windowed)."""
    encoded: EncodedRequest


@dataclass(frozen=True)
class Ranked:
    index: int
    score: float
    truncated_tokens: int
    windows: int


class ServedModel:
    """One loaded model folder, ready to score: its pair encoder, its batcher, and the backend
    the batcher runs (any :class:`~service.backends.base.Backend`)."""

    def __init__(
        self,
        folder: Path,
        config: ModelFolderConfig,
        backend: Backend,
        *,
        batching: BatchingConfig,
        tokenizer_pool: ThreadPoolExecutor,
    ) -> None:
        self.folder = folder
        self.config = config
        self.name = config.name
        self.encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
        self.backend = backend
        self.metrics = ModelMetrics()
        self.batcher = DynamicBatcher(
            self.backend.run,
            pad_id=self.config.template.pad_id,
            with_types=self.config.type_ids_input,
            config=batching,
            metrics=self.metrics,
            name=self.name,
        )
        self._tokenizer_pool = tokenizer_pool

    async def score(
        self,
        query: str,
        documents: list[str],
        long_documents: LongDocuments = "truncate",
        *,
        max_document_tokens: int | None = None,
        side: TruncationSide = "right",
    ) -> Scored:
        """Scores every document; raises QueryTooLong, DocumentTooLong or QueueFull.

        ``max_document_tokens`` and ``side`` are :meth:`PairEncoder.encode`'s."""
        self.metrics.requests += 1
        loop = asyncio.get_running_loop()
        encode = functools.partial(
            self.encoder.encode, query, documents, long_documents, max_document_tokens=max_document_tokens, side=side
        )
        encoded = await loop.run_in_executor(self._tokenizer_pool, encode)
        logits = await self.batcher.score(encoded.pairs)
        best = np.full(len(documents), -np.inf)
        for pair, logit in zip(encoded.pairs, logits, strict=True):
            best[pair.document] = max(best[pair.document], logit)
        return Scored(best, encoded)

    async def close(self) -> None:
        await self.batcher.close()


def sigmoid(x: float) -> float:
    # Written to stay finite for large |x| in both directions.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def rank(scored: Scored, top_n: int | None, normalize: bool) -> list[Ranked]:
    """Sorts by score, descending (ties by index), keeps ``top_n``, optionally applies a sigmoid."""
    order = sorted(range(len(scored.scores)), key=lambda i: (-scored.scores[i], i))
    if top_n is not None:
        order = order[:top_n]
    enc = scored.encoded
    return [
        Ranked(
            i,
            sigmoid(float(scored.scores[i])) if normalize else float(scored.scores[i]),
            enc.truncated_tokens[i],
            enc.windows[i],
        )
        for i in order
    ]
