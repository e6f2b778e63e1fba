"""Dynamic batching's settings: one frozen record, built from the settings table and shown by
ListModels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching settings (shown by ListModels)."""

    max_batch_tokens: int = 8192
    """Padded tokens per micro-batch (``longest sequence * pairs``), like TEI's max-batch-tokens.
    A single pair longer than this still runs, alone."""
    max_batch_pairs: int = 64
    max_queue_pairs: int = 8192
    """Pairs waiting across all requests before new requests are refused."""
    max_queue_seconds: float = 5.0
    """Longest estimated wait a new request is admitted with."""
    batch_seconds: float = 0.25
    """Target duration of one micro-batch."""
    batch_tokens: int | None = None
    """Padded tokens a micro-batch is cut at for speed; None: the fastest size timed at start-up
    (:func:`~rerank.service.core.batch_sizing.size_batches`)."""
    stall_seconds: float = 3.0
    """How far past its expected end a micro-batch runs (and a request waits past the queue's
    bound for its first micro-batch) before the model counts as stuck
    (:meth:`~rerank.service.core.batching.DynamicBatcher.stall`)."""
    inference_nice: int = 10
    """Niceness added to the threads that run micro-batches (:mod:`rerank.service.core.priority`)."""
