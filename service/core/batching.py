"""Dynamic batching: pairs from concurrent requests packed into padded micro-batches.

Each model has one :class:`DynamicBatcher`. Requests enqueue their pairs sorted by length, so
neighbouring pairs pad little (shortest first and longest first in turn across queued requests);
a single loop takes pairs in arrival order until the next one would push the micro-batch past its
token budget (``longest * pairs``, padding included) or its pair cap, runs it on the backend in a
worker thread, and hands each request its scores.

* Bounded: a request that would take the queue past ``max_queue_pairs`` is refused at once
  (:class:`QueueFull`, RESOURCE_EXHAUSTED / HTTP 429) instead of growing memory.
* Cancellation: when a client goes away its handler is cancelled; its pairs still queued are
  dropped before they reach the model.
* The event loop never runs inference or padding: both happen on the model's worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.backends.base import Batch
from service.core.metrics import ModelMetrics
from service.core.tokenization import Pair
from service.errors import QueueFull, RerankError, TooManyDocuments


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching settings (shown by ListModels)."""

    max_batch_tokens: int = 8192
    """Padded tokens per micro-batch (``longest sequence * pairs``), like TEI's max-batch-tokens.
    A single pair longer than this still runs, alone."""
    max_batch_pairs: int = 64
    max_queue_pairs: int = 8192
    """Pairs waiting across all requests before new requests are refused."""


@dataclass(eq=False)
class _Ticket:
    """One request's pairs in the queue, and where its scores go."""

    pairs: list[Pair]
    order: list[int]
    """Pair indices sorted by length: the order in which they are taken."""
    future: asyncio.Future[np.ndarray]
    scores: np.ndarray
    descending: bool = False
    """Whether ``order`` runs longest first (see :meth:`DynamicBatcher.score`)."""
    taken: int = 0
    done: int = 0
    cancelled: bool = False
    enqueued_at: float = field(default_factory=time.perf_counter)


def pad(pairs: list[Pair], pad_id: int, with_types: bool) -> Batch:
    """Right-pads ``pairs`` to the longest one."""
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


class DynamicBatcher:
    """Packs and runs one model's pairs. Create it inside the running event loop."""

    def __init__(
        self,
        run: Callable[[Batch], np.ndarray],
        *,
        pad_id: int,
        with_types: bool,
        config: BatchingConfig,
        metrics: ModelMetrics,
        name: str = "model",
    ) -> None:
        self._run = run
        self._pad_id = pad_id
        self._with_types = with_types
        self.config = config
        self.metrics = metrics
        self._queue: collections.deque[_Ticket] = collections.deque()
        self._queued_pairs = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._task: asyncio.Task[None] | None = None
        self._refusal: RerankError | None = None

    @property
    def queued_pairs(self) -> int:
        return self._queued_pairs

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    def refuse(self, error: RerankError) -> None:
        """From now on :meth:`score` raises ``error``, and every request still waiting fails
        with it (the end of a drain: it gets an answer instead of a dropped call). A batch
        already on the model finishes; its requests' other pairs do not run."""
        self._refusal = error
        for ticket in self._queue:
            if not ticket.future.done():
                ticket.future.set_exception(error)
            if not ticket.cancelled:
                ticket.cancelled = True
                self._queued_pairs -= len(ticket.pairs) - ticket.taken
        self.metrics.queue_pairs = self._queued_pairs

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def score(self, pairs: list[Pair]) -> np.ndarray:
        """Logits for ``pairs``, in their order. Raises :class:`QueueFull` when over the limit."""
        if self._refusal is not None:
            raise self._refusal
        if not pairs:
            return np.zeros(0)
        if len(pairs) > self.config.max_queue_pairs:
            self.metrics.rejected_requests += 1
            raise TooManyDocuments(
                f"this request needs {len(pairs)} sequences, more than the queue holds "
                f"({self.config.max_queue_pairs}); send fewer documents per request",
                field="documents",
                metadata={"limit": str(self.config.max_queue_pairs)},
            )
        if self._queued_pairs + len(pairs) > self.config.max_queue_pairs:
            self.metrics.rejected_requests += 1
            raise QueueFull(
                f"the queue holds {self._queued_pairs} pairs and this request adds {len(pairs)}; "
                f"the limit is {self.config.max_queue_pairs}: retry later"
            )
        self.start()
        # Serpentine order across requests: a request queued behind one that is taken shortest
        # first is taken longest first, and so on, so that the micro-batch spanning the two
        # starts where the previous request ends instead of mixing its longest pairs with the
        # next one's shortest (measured on bert-small W2: 6.8 % padding against W1's 4.3 %).
        previous = self._queue[-1] if self._queue else None
        descending = previous is not None and not previous.descending
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids), reverse=descending)
        ticket = _Ticket(
            pairs, order, asyncio.get_running_loop().create_future(), np.zeros(len(pairs)), descending=descending
        )
        self._queue.append(ticket)
        self._queued_pairs += len(pairs)
        self.metrics.queue_pairs = self._queued_pairs
        self._wake.set()
        try:
            return await ticket.future
        except asyncio.CancelledError:
            # The client went away: drop whatever of this request has not reached the model.
            if not ticket.cancelled:
                ticket.cancelled = True
                self._queued_pairs -= len(pairs) - ticket.taken
                self.metrics.cancelled_requests += 1
            raise

    def _next_batch(self) -> list[tuple[_Ticket, int]]:
        """Takes pairs in arrival order while the micro-batch stays within its budget."""
        taken: list[tuple[_Ticket, int]] = []
        longest = 0
        while self._queue:
            ticket = self._queue[0]
            if ticket.cancelled or ticket.taken == len(ticket.pairs):
                self._queue.popleft()
                continue
            index = ticket.order[ticket.taken]
            length = len(ticket.pairs[index].ids)
            grown = max(longest, length)
            if taken and (
                grown * (len(taken) + 1) > self.config.max_batch_tokens or len(taken) >= self.config.max_batch_pairs
            ):
                break
            taken.append((ticket, index))
            ticket.taken += 1
            self._queued_pairs -= 1
            longest = grown
        self.metrics.queue_pairs = self._queued_pairs
        return taken

    def _infer(self, pairs: list[Pair]) -> tuple[np.ndarray, Batch]:
        batch = pad(pairs, self._pad_id, self._with_types)
        return self._run(batch), batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            taken = self._next_batch()
            if not taken:
                continue
            pairs = [t.pairs[i] for t, i in taken]
            started = time.perf_counter()
            try:
                logits, batch = await loop.run_in_executor(self._executor, self._infer, pairs)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the loop
                for ticket in {t for t, _ in taken}:
                    if not ticket.future.done():
                        ticket.future.set_exception(exc)
                    if not ticket.cancelled:
                        ticket.cancelled = True
                        self._queued_pairs -= len(ticket.pairs) - ticket.taken
                continue
            self.metrics.record_batch(
                pairs=len(pairs),
                padded_tokens=int(batch.input_ids.size),
                real_tokens=int(batch.attention_mask.sum()),
                seconds=time.perf_counter() - started,
            )
            for (ticket, index), logit in zip(taken, logits, strict=True):
                ticket.scores[index] = logit
                ticket.done += 1
                if ticket.done == len(ticket.pairs) and not ticket.future.done():
                    ticket.future.set_result(ticket.scores)
