"""What the core asks of a backend, and nothing more.

:mod:`rerank.service.core` sees only :class:`Batch` (padded by :func:`pad`) and :class:`Backend`;
the concrete backends (:mod:`rerank.service.backends.onnx`, ...) implement the protocol, and
:mod:`rerank.service.backends.loader` picks one for a model folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Batch:
    """A padded micro-batch: int64 arrays ``[pairs, longest]``, right-padded."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None

    @classmethod
    def filled(cls, pairs: int, length: int, token: int) -> Batch:
        """``pairs`` rows of ``token`` repeated ``length`` times, unpadded: what start-up timing
        and warm-up run (the speed of a batch does not depend on its tokens)."""
        ids = np.full((pairs, length), token, dtype=np.int64)
        return cls(ids, np.ones_like(ids), np.zeros_like(ids))


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
    return Batch(ids, mask, types)


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

    def warm_up(self) -> None:
        """Runs a small batch once, so the first request does not pay for lazy initialisation."""


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
