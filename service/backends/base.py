"""What the core asks of a backend, and nothing more.

:mod:`rerank.service.core` sees only :class:`Batch` (padded by :func:`pad`) and :class:`Backend`;
the concrete backends (:mod:`rerank.service.backends.onnx`, ...) implement the protocol, and
:mod:`rerank.service.backends.loader` picks one for a model folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rerank.service.model_folder import (
    ATTENTION_MASK,
    INPUT_IDS,
    PREFIX_IDS,
    PREFIX_MASK,
    PREFIX_ROW,
    TOKEN_TYPE_IDS,
)


@dataclass(frozen=True)
class Batch:
    """A padded micro-batch: int64 arrays ``[pairs, longest]``, right-padded."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    shared: int = 1
    """Leading tokens every row has in common, fewer than any row has: what a shared-prefix
    graph reads once (:func:`pad` counts them)."""

    def work(self, shares_head: bool) -> int:
        """Tokens the graph runs for this batch (:func:`work_tokens`): every padded one, or for a
        graph that ``shares_head`` the common head once."""
        pairs, longest = self.input_ids.shape
        return work_tokens(pairs, longest, self.shared if shares_head else 0)

    @classmethod
    def filled(cls, pairs: int, length: int, token: int, shared: int = 1) -> Batch:
        """``pairs`` rows of ``token`` repeated ``length`` times, unpadded: what start-up timing
        and warm-up run (the speed of a batch does not depend on its tokens). Its rows count as
        sharing ``shared`` tokens: by default one, so a shared-prefix graph runs the most a
        batch of them can cost."""
        ids = np.full((pairs, length), token, dtype=np.int64)
        return cls(ids, np.ones_like(ids), np.zeros_like(ids), shared=shared)


def work_tokens(pairs: int, longest: int, shared: int) -> int:
    """Tokens a graph runs for ``pairs`` rows padded to ``longest`` whose first ``shared``
    tokens it reads once (0: a graph that reads every row whole): the unit micro-batches are
    cut, timed and priced in. The rows' attention to the head is left out (small beside the
    projections at reranking lengths)."""
    return shared + pairs * (longest - shared)


def common_head(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class Tokens(Protocol):
    """One sequence to pad (the core's tokenized pair): int64 token ids and token type ids."""

    @property
    def ids(self) -> np.ndarray: ...

    @property
    def type_ids(self) -> np.ndarray: ...


def pad(pairs: Sequence[Tokens], pad_id: int, with_types: bool) -> Batch:
    """Right-pads ``pairs`` to the longest one; token type ids only ``with_types``."""
    longest = max(len(p.ids) for p in pairs)
    ids = np.full((len(pairs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(pairs), longest), dtype=np.int64)
    types = np.zeros((len(pairs), longest), dtype=np.int64) if with_types else None
    for row, pair in enumerate(pairs):
        n = len(pair.ids)
        ids[row, :n] = pair.ids
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = pair.type_ids
    shortest = min(len(p.ids) for p in pairs)
    differ = np.flatnonzero((ids[:, :shortest] != ids[:1, :shortest]).any(axis=0))
    shared = int(differ[0]) if len(differ) else shortest
    return Batch(ids, mask, types, shared=min(shared, shortest - 1))


def graph_feed(batch: Batch, inputs: Collection[str]) -> dict[str, np.ndarray]:
    """What a graph with ``inputs`` reads for ``batch``: the padded rows, or for a shared-prefix
    graph their common head once (``batch.shared`` tokens) and each row from there on."""
    if PREFIX_IDS not in inputs:
        feed = {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask}
        if TOKEN_TYPE_IDS in inputs:
            types = batch.token_type_ids
            feed[TOKEN_TYPE_IDS] = types if types is not None else np.zeros_like(batch.input_ids)
        return feed
    head = batch.shared
    if head < 1 or head >= int(batch.attention_mask.sum(axis=1).min()):
        raise ValueError(f"a shared-prefix graph needs a common head shorter than every row (shared: {head})")
    return {
        PREFIX_IDS: np.ascontiguousarray(batch.input_ids[:1, :head]),
        PREFIX_MASK: np.ones((1, head), dtype=np.int64),
        PREFIX_ROW: np.zeros(len(batch.input_ids), dtype=np.int64),
        INPUT_IDS: np.ascontiguousarray(batch.input_ids[:, head:]),
        ATTENTION_MASK: np.ascontiguousarray(batch.attention_mask[:, head:]),
    }


class Backend(Protocol):
    """Runs one model's graph on one device."""

    @property
    def provider(self) -> str:
        """Where it runs, e.g. ``CPUExecutionProvider``."""

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16``, ``bf16-mixed``, ``int8`` or ``fp16``."""

    @property
    def variant_key(self) -> str:
        """The model folder's variant being run (``fp32``, ``fp32-fused``, ...)."""

    @property
    def streams(self) -> int:
        """How many micro-batches it runs at once, each on its own share of the threads:
        :meth:`run` is called from that many threads concurrently."""

    def run(self, batch: Batch) -> np.ndarray:
        """float64 logits ``[pairs]``. Blocking: called from the model's worker threads
        (:attr:`streams` of them)."""

    def warm_up(self, most_tokens: int) -> None:
        """Runs a small batch once, so the first request does not pay for lazy initialisation;
        none of more than ``most_tokens`` padded tokens (the micro-batch size the model is
        served at: a larger shape would only cost start-up time and the scratch memory a
        runtime keeps for it)."""


@dataclass(frozen=True)
class VariantChoice:
    """Which variant a model is served with, and why (shown in ``/v1/models``)."""

    key: str
    reason: str
    """``pinned by RERANK_VARIANT``, ``the only candidate`` or how the fastest was found."""
    milliseconds: dict[str, float]
    """Each timed candidate's best time on the start-up micro-batch (empty: nothing was timed)."""


def timed_runs(
    run: Callable[[Batch], object],
    batch: Batch,
    *,
    streams: int = 1,
    runs: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds ``runs`` runs of ``batch`` take on each of ``streams`` threads at once: how a
    backend with :attr:`Backend.streams` streams is timed so that every stream is busy, as the
    batcher keeps them (one stream: the runs one after the other on this thread)."""
    started = clock()
    if streams == 1:
        for _ in range(runs):
            run(batch)
    else:
        with ThreadPoolExecutor(streams) as pool:
            for done in [pool.submit(lambda: [run(batch) for _ in range(runs)]) for _ in range(streams)]:
                done.result()
    return clock() - started
