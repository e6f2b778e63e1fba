"""Turns a query and its documents into model-ready token sequences.

The query is encoded once per request and never cut; each document is encoded without special
tokens and then framed by the model's :class:`~rerank.service.model_folder.PairTemplate`. This
is what ``tokenizer(query, document, truncation="only_second")`` produces, but it lets one query
encoding serve every document, and lets a long document be split into windows.

A model whose template has a prompt (an LLM reranker) reads the query written into the prompt's
query part, with the request's instruction (or the model's default), and each document written
into its document part; the prompt's fixed prefix and suffix frame them as special tokens do,
so truncation and windows cut only the document and the template always survives whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from tokenizers import Tokenizer

from rerank.service.core.metrics import ModelMetrics
from rerank.service.errors import DocumentTooLong, InvalidRequest, QueryTooLong, QueueFull
from rerank.service.model_folder import PairTemplate

T = TypeVar("T")
CHUNK = 256
"""Documents tokenized at once."""

LongDocuments = Literal["truncate", "window", "reject"]
"""What happens to a document longer than the room the query leaves: cut to fit, scored in
overlapping windows (the best one counts), or refused (:class:`DocumentTooLong`)."""
TruncationSide = Literal["right", "left"]
"""Which end of a document truncation cuts: the tail (``right``) or the head (``left``)."""
WINDOW_OVERLAP = 0.25
"""Fraction of a window repeated at the start of the next one, so no sentence is only ever seen cut."""


@dataclass(frozen=True)
class Pair:
    """One sequence to score: a whole document, its truncated head, or one of its windows."""

    document: int
    """Index of the document in the request."""
    ids: np.ndarray
    """int64 token ids, special tokens included."""
    type_ids: np.ndarray
    """int64 token type ids (all zero unless the model reads them)."""


@dataclass(frozen=True)
class EncodedRequest:
    """All pairs of one request, plus per-document bookkeeping for the response."""

    pairs: list[Pair]
    truncated_tokens: list[int]
    """Per document: tokens that no scored sequence contains."""
    windows: list[int]
    """Per document: how many sequences were scored."""
    characters: int = 0
    """Characters in the documents (what admission estimates sizes from, before tokenizing)."""
    document_tokens: int = 0
    """Tokens in the documents before any cut."""
    head: int = 0
    """Leading tokens every pair has by construction (the template's prefix, the query, the
    template's middle), fewer than any pair has: where the graph reads a common head once, what
    it will share at least (documents that begin alike share more, which :func:`pad` finds)."""

    @property
    def total_tokens(self) -> int:
        return sum(len(p.ids) for p in self.pairs)


class PairEncoder:
    """Encodes (query, documents) for one model. Thread-safe: ``tokenizers`` releases the GIL."""

    def __init__(self, tokenizer_path: Path, template: PairTemplate, max_length: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.template = template
        self.max_length = max_length

    def room_for_document(self, query_len: int) -> int:
        return self.max_length - self.template.special_count - query_len

    @property
    def takes_instruction(self) -> bool:
        """Whether the model reads an instruction (only models with a prompt do)."""
        return self.template.prompt is not None

    def check_instruction(self, instruction: str | None) -> None:
        """Raises :class:`InvalidRequest` (field ``instruction``) when an instruction is given to a
        model that takes none: ignoring it would score something the caller did not ask for."""
        if instruction is not None and not self.takes_instruction:
            raise InvalidRequest(
                "this model takes no instruction (it is a cross-encoder, which reads only the query and the "
                "document); leave instruction out",
                reason="INSTRUCTION_NOT_SUPPORTED",
                field="instruction",
            )

    def query_text(self, query: str, instruction: str | None = None) -> str:
        """The text tokenized as the query part: the query, or the prompt's query part."""
        prompt = self.template.prompt
        return query if prompt is None else prompt.query_text(query, instruction)

    def encode(
        self,
        query: str,
        documents: list[str],
        long_documents: LongDocuments = "truncate",
        *,
        max_document_tokens: int | None = None,
        side: TruncationSide = "right",
        instruction: str | None = None,
    ) -> EncodedRequest:
        """Encodes every pair; raises :class:`QueryTooLong` when the query leaves no room.

        ``max_document_tokens`` cuts each document to that many tokens first (Cohere's
        ``max_tokens_per_doc``), before the model's own window applies; the tokens it cuts count
        as truncated. ``side`` is the end that truncation (and that cap) removes.
        ``instruction``: for a model with a prompt, what replaces its default instruction; any
        other model refuses one (:meth:`check_instruction`).
        """
        self.check_instruction(instruction)
        query_ids = self.tokenizer.encode(self.query_text(query, instruction), add_special_tokens=False).ids
        room = self.room_for_document(len(query_ids))
        if room < 1:
            what = "query" if self.template.prompt is None else "query, with its instruction and prompt text,"
            raise QueryTooLong(
                field="query",
                message=f"the {what} is {len(query_ids)} tokens; this model reads at most {self.max_length} tokens "
                f"per pair including {self.template.special_count} special tokens, which leaves no room for a "
                "document",
            )
        # Truncation keeps min(room, cap) tokens from ``side``: only those are kept from each document's
        # encoding (a window needs them all; a refused document needs only its count).
        keep = None if long_documents == "window" else min(room, max_document_tokens or room)
        prompt = self.template.prompt
        texts = documents if prompt is None else [prompt.document_text(d) for d in documents]
        doc_ids, doc_tokens = self._encode_documents(texts, keep, side)
        t = self.template
        head = [i for i, _ in t.prefix] + query_ids + [i for i, _ in t.middle]
        head_types = [ty for _, ty in t.prefix] + [t.query_type] * len(query_ids) + [ty for _, ty in t.middle]
        tail = [i for i, _ in t.suffix]
        tail_types = [ty for _, ty in t.suffix]

        pairs: list[Pair] = []
        truncated: list[int] = []
        windows: list[int] = []
        for index, (ids, total) in enumerate(zip(doc_ids, doc_tokens, strict=True)):
            capped = 0
            if max_document_tokens is not None and total > max_document_tokens:
                capped = total - max_document_tokens
                ids = _keep(ids, max_document_tokens, side)
                total = max_document_tokens
            if long_documents == "reject" and total > room:
                raise DocumentTooLong(
                    f"document {index} is {total} tokens; with this query the model reads at most {room} document "
                    f"tokens ({self.max_length} per pair, query and {t.special_count} special tokens included)",
                    index=index,
                    metadata={"tokens": str(total), "limit": str(room)},
                )
            if long_documents == "window" and len(ids) > room:
                step = max(1, room - int(room * WINDOW_OVERLAP))
                starts = list(range(0, len(ids) - room + step, step))
                chunks = [ids[s : s + room] for s in starts]
                cut = 0
            else:
                chunks = [_keep(ids, room, side)]
                cut = max(0, total - room)
            for chunk in chunks:
                seq = head + chunk + tail
                types = head_types + [t.document_type] * len(chunk) + tail_types
                pairs.append(Pair(index, np.asarray(seq, dtype=np.int64), np.asarray(types, dtype=np.int64)))
            truncated.append(cut + capped)
            windows.append(len(chunks))
        shortest = min((len(p.ids) for p in pairs), default=0)
        return EncodedRequest(
            pairs,
            truncated,
            windows,
            characters=sum(map(len, documents)),
            document_tokens=sum(doc_tokens),
            head=max(0, min(len(head), shortest - 1)),
        )

    def _encode_documents(
        self, documents: list[str], keep: int | None, side: TruncationSide
    ) -> tuple[list[list[int]], list[int]]:
        """Each document's token ids (only ``keep`` of them, from ``side``, when it is given) and
        full token count. Tokenized :data:`CHUNK` documents at a time, so that a request of
        thousands of long documents never holds every token's encoding at once."""
        ids: list[list[int]] = []
        counts: list[int] = []
        for start in range(0, len(documents), CHUNK):
            for encoding in self.tokenizer.encode_batch(documents[start : start + CHUNK], add_special_tokens=False):
                counts.append(len(encoding.ids))
                ids.append(encoding.ids if keep is None else _keep(encoding.ids, keep, side))
        return ids, counts


def _keep(ids: list[int], count: int, side: TruncationSide) -> list[int]:
    """``count`` tokens of ``ids``: the head when cutting on the right, the tail on the left."""
    return ids[:count] if side == "right" else ids[max(0, len(ids) - count) :]


class TokenizerPool:
    """The threads that tokenize requests, with a bounded queue in front of them.

    At most ``max_waiting`` requests are tokenizing or waiting to; the next one is refused at
    once (:class:`~rerank.service.errors.QueueFull`) instead of piling up behind big bodies. With
    ``metrics`` (the model's), the refusal and the time ``function`` took on its thread (not the
    wait for one) are recorded."""

    def __init__(self, threads: int, max_waiting: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tokenize")
        self.max_waiting = max_waiting
        self.waiting = 0

    async def run(
        self, function: Callable[..., T], *args: Any, metrics: ModelMetrics | None = None, **kwargs: Any
    ) -> T:
        if self.waiting >= self.max_waiting:
            if metrics is not None:
                metrics.reject("tokenizer_queue")
            raise QueueFull(f"the tokenizer queue is full ({self.max_waiting} requests); retry later", retry_after=1)
        self.waiting += 1
        took = [0.0]

        def timed() -> T:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                took[0] = time.perf_counter() - started

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            self.waiting -= 1
            if metrics is not None and took[0]:
                metrics.record_tokenization(took[0])  # here, on the event loop: ModelMetrics is not thread-safe

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
