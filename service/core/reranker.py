"""A served model: tokenization -> dynamic batching -> inference -> ranking.

:class:`ServedModel` ties one model folder's pair encoder, backend and batcher together and
answers "score these documents for this query". :func:`rank` turns scores into the ordered,
``top_n``-cut result list. Neither knows about gRPC or JSON.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rerank.service.admission.estimate import SAMPLE_DOCUMENT, SAMPLE_DOCUMENTS, SAMPLE_QUERY, BodyPrice
from rerank.service.admission.holds import Holds
from rerank.service.admission.queue import PADDING_ALLOWANCE, queue_time_refusal, shared_head_tokens
from rerank.service.backends.base import Backend, VariantChoice
from rerank.service.backends.cpu_features import CpuFeatures
from rerank.service.core.batch_sizing import BatchSizing
from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.throughput import Throughput
from rerank.service.core.tokenization import (
    WINDOW_OVERLAP,
    EncodedRequest,
    LongDocuments,
    PairEncoder,
    TokenizerPool,
    TruncationSide,
)
from rerank.service.errors import QueryTooLong, QueueFull, RateLimited
from rerank.service.model_folder import ModelFolderConfig
from rerank.service.telemetry import tracing


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


class Caller(Protocol):
    """Who a request is for: the name fairness (and logs) group it under, and the allowance it
    is charged to (:class:`rerank.service.router.limits.KeyCaller`)."""

    @property
    def name(self) -> str: ...

    def admit(self) -> None:
        """Raises :class:`~rerank.service.errors.RateLimited` when the caller is over a limit."""

    def charge(self, tokens: int) -> None:
        """Charges a tokenized request's tokens."""

    def held(self, model: str) -> float | None:
        """The cost the edge's check held a place at on ``model`` for this request, or None."""


class Anonymous:
    """A caller without a key or limits (``--insecure-no-auth``, tests)."""

    name = ""

    def admit(self) -> None:
        pass

    def charge(self, tokens: int) -> None:
        pass

    def held(self, model: str) -> float | None:
        return None


ANONYMOUS = Anonymous()


class ServedModel:
    """One loaded model folder, ready to score: its pair encoder, its batcher, and the backend
    the batcher runs (any :class:`~rerank.service.backends.base.Backend`)."""

    def __init__(
        self,
        folder: Path,
        config: ModelFolderConfig,
        backend: Backend,
        *,
        batching: BatchingConfig,
        tokenizers: TokenizerPool,
        throughput: Throughput | None = None,
        sizing: BatchSizing | None = None,
        metrics: ModelMetrics | None = None,
        choice: VariantChoice | None = None,
        cpu: CpuFeatures | None = None,
        holds: Holds | None = None,
    ) -> None:
        self.folder = folder
        self.config = config
        self.name = config.name
        self.encoder = PairEncoder(folder / "tokenizer.json", config.template, config.max_length)
        self.backend = backend
        self.choice = choice or VariantChoice(backend.variant_key, "", {})
        """Which variant runs and why (``/v1/models``)."""
        self.cpu = cpu
        """The CPU the server found at start-up (``/v1/models``); None where nobody looked."""
        self.sizing = sizing
        """The micro-batch size found at start-up, and how (``/v1/models``); None where nobody timed it."""
        if throughput is None and sizing is not None:
            throughput = Throughput(sizing.tokens_per_second, measured=True)
        self.metrics = metrics or ModelMetrics(config.name)
        self.batcher = DynamicBatcher(
            self.backend.run,
            pad_id=self.config.template.pad_id,
            with_types=self.config.type_ids_input,
            config=batching,
            metrics=self.metrics,
            name=self.name,
            throughput=throughput,
            holds=holds,
            batch_tokens=sizing.batch_tokens if sizing is not None else None,
            streams=backend.streams,
            shares_head=bool(config.graph.get("shared_prefix")),
        )
        self._tokenizers = tokenizers
        self.characters_per_token = 4.0
        """Learned from the requests tokenized so far (first from a sample): what sizes a request
        before tokenizing it."""
        with contextlib.suppress(QueryTooLong):  # a context too short for the sample's query
            self._learn_characters(self.encoder.encode(SAMPLE_QUERY, [SAMPLE_DOCUMENT]), rate=1.0)
        self.price = BodyPrice()
        """What the edge's check prices a body's bytes at, learned from every request's estimate."""
        samples = [SAMPLE_DOCUMENT] * SAMPLE_DOCUMENTS
        self.price.learn(SAMPLE_QUERY, samples, *self.estimate(SAMPLE_QUERY, samples, "truncate"), rate=1.0)

    def estimate(
        self,
        query: str,
        documents: list[str],
        long_documents: LongDocuments,
        max_document_tokens: int | None = None,
        instruction: str | None = None,
    ) -> tuple[float, int]:
        """A request's cost in padded tokens and its number of pairs, from its characters alone
        (a prompt's query part, instruction included, counts as the query)."""
        per_token = self.characters_per_token
        head = len(self.encoder.query_text(query, instruction)) / per_token + self.encoder.template.special_count
        room = max(1.0, self.config.max_length - head)
        step = max(1.0, room * (1 - WINDOW_OVERLAP))
        tokens = 0.0
        pairs = 0
        for document in documents:
            size = len(document) / per_token
            if max_document_tokens is not None:
                size = min(size, max_document_tokens)
            if long_documents == "window" and size > room:
                windows = 1 + math.ceil((size - room) / step)
                tokens += windows * self.config.max_length
                pairs += windows
            else:
                tokens += head + min(size, room)
                pairs += 1
        if self.batcher.shares_head:
            tokens = shared_head_tokens(tokens, pairs, head, self.batcher.budget())
        return PADDING_ALLOWANCE * tokens, pairs

    def _learn_characters(self, encoded: EncodedRequest, rate: float = 0.1) -> None:
        """Moves :attr:`characters_per_token` ``rate`` of the way toward what ``encoded`` had."""
        if encoded.document_tokens:
            ratio = min(10.0, max(1.0, encoded.characters / encoded.document_tokens))
            self.characters_per_token += rate * (ratio - self.characters_per_token)

    def early_refusal(self, size: int) -> tuple[QueueFull | None, float, str]:
        """The refusal a request body of ``size`` bytes gets before it is read (None: admitted),
        the cost it is priced at (:class:`~rerank.service.admission.estimate.BodyPrice`) and the
        refusal's reason for the metrics: the queue's time bound, then its size bound, counting
        the places already held. On the event loop."""
        cost = self.price.of(size)
        refusal = queue_time_refusal(self.batcher.with_holds(self.batcher.state()), cost)
        if refusal is not None:
            return refusal, cost, "queue_time"
        refusal = self.batcher.early_size_refusal(self.price.pairs_of(size), self.price.pairs_per_cost)
        return refusal, cost, "queue_full"

    async def score(
        self,
        query: str,
        documents: list[str],
        long_documents: LongDocuments = "truncate",
        *,
        caller: Caller = ANONYMOUS,
        request_id: str = "",
        max_document_tokens: int | None = None,
        side: TruncationSide = "right",
        instruction: str | None = None,
    ) -> Scored:
        """Scores every document: admitted by its estimated cost before it is tokenized, then
        queued on that admission at its exact cost (checked again only if that is far over the
        estimate: :data:`~rerank.service.admission.queue.MISESTIMATE`), or on the place the edge's
        check held for it (``caller.held``). Raises QueryTooLong, DocumentTooLong, QueueFull,
        RateLimited, TooManyDocuments or Unavailable; InvalidRequest for an ``instruction`` to a
        model that takes none. ``max_document_tokens``, ``side`` and ``instruction`` are
        :meth:`PairEncoder.encode`'s."""
        self.encoder.check_instruction(instruction)  # before any admission: a bad request costs nothing
        self.metrics.requests += 1
        try:
            caller.admit()
        except RateLimited:
            self.metrics.reject("rate_limited")
            raise
        cost, pairs = self.estimate(query, documents, long_documents, max_document_tokens, instruction)
        self.price.learn(query, documents, cost, pairs)
        reservation = self.batcher.admit(cost, pairs, caller.held(self.name))
        try:
            with tracing.span("rerank.tokenize", {"rerank.documents": len(documents)}):
                encoded = await self._tokenizers.run(
                    self.encoder.encode,
                    query,
                    documents,
                    long_documents,
                    metrics=self.metrics,
                    max_document_tokens=max_document_tokens,
                    side=side,
                    instruction=instruction,
                )
            self._learn_characters(encoded)
            caller.charge(encoded.total_tokens)
        except BaseException:
            self.batcher.release(reservation)
            raise
        # Admitted before tokenizing: queued on that admission (the reservation), not checked
        # again, so that no request is refused after its work has begun (see MISESTIMATE).
        logits = await self.batcher.score(
            encoded.pairs, client=caller.name, request_id=request_id, reservation=reservation, head=encoded.head
        )
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
