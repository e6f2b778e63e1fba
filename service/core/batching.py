"""One model's dynamic batcher: admission, queueing and delivery around the scheduler and worker.

Each model has one :class:`DynamicBatcher`. It admits a request (:mod:`rerank.service.admission`:
time-budgeted, counting the places the edge's check holds), queues its pairs (:mod:`~rerank.service.core.scheduler`:
fair micro-batches), has them run (:mod:`~rerank.service.core.worker`: threads, failure isolation)
and delivers each pair's logit to its request:

* **Batches of the fastest size**: a micro-batch is cut at the size the model ran fastest at
  on this machine (:mod:`rerank.service.core.batch_sizing`), at ``batch_seconds`` of work by
  the model's measured throughput (padded tokens per second), and at ``max_batch_tokens`` and
  ``max_batch_pairs``. The time limit bounds how long a new request waits for the batch in flight.
* **Admission**: ``max_queue_seconds`` bounds the estimated wait, ``max_queue_pairs`` the queue's
  memory. An admitted request is queued on that admission once tokenized, not checked again
  (unless its exact cost is far over the estimate: :data:`~rerank.service.admission.queue.MISESTIMATE`):
  work once begun is not thrown away. A request the edge's check held a place for is admitted on
  that place (:meth:`DynamicBatcher.admit`).
* **A watchdog's view**: :meth:`DynamicBatcher.stall` says whether inference is stuck (a
  micro-batch far past its expected end) or a request is overdue (waiting far past the queue's
  bound for its first micro-batch). While every stream is stuck, the requests waiting get
  :class:`~rerank.service.errors.Unavailable` (which Envoy retries on another replica) and so do
  new ones; the requests of a stuck micro-batch get it at once.
* **Cancellation**: a request whose client went away has its waiting pairs dropped.
* **Pipelined**: the next micro-batch is composed while the current one runs (and composed
  again when the queue changes meanwhile, so a request arriving now still joins it).
* **Reporting**: it records what it does (:class:`~rerank.service.core.metrics.ModelMetrics`:
  batch sizes and tokens, inference and queue times, the queue's gauges, rejections by reason)
  and each request's ``rerank.queue`` and ``rerank.inference`` spans
  (:mod:`rerank.service.telemetry.tracing`) under the span it was queued from.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from rerank.service.admission.holds import Holds
from rerank.service.admission.queue import (
    MISESTIMATE,
    QueueState,
    padded_cost,
    queue_time_refusal,
    retry_after,
    shared_head_tokens,
)
from rerank.service.backends.base import Batch, common_head
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.scheduler import Job, Request, Scheduler
from rerank.service.core.throughput import Throughput
from rerank.service.core.tokenization import Pair
from rerank.service.core.worker import Worker
from rerank.service.errors import QueueFull, RerankError, TooManyDocuments, Unavailable
from rerank.service.telemetry import tracing

log = logging.getLogger(__name__)

MIN_BATCH_TOKENS = 512
"""The smallest token budget a micro-batch gets, however slow the model."""
STALL_FACTOR = 4.0
"""A micro-batch is stuck once it has run this many times its expected duration, and at least
``stall_seconds`` past its expected end (:attr:`BatchingConfig.stall_seconds`)."""


def cost_of(pairs: list[Pair], head: int = 0, budget: int = 0) -> float:
    """What ``pairs`` will cost the model, in padded tokens; with ``head`` (their common head,
    where the graph reads it once) in micro-batches of ``budget`` tokens
    (:func:`~rerank.service.admission.queue.shared_head_tokens`)."""
    return padded_cost(shared_head_tokens(sum(len(p.ids) for p in pairs), len(pairs), head, budget))


def common_head_of(pairs: list[Pair]) -> int:
    """The leading tokens every one of ``pairs`` has, fewer than the shortest has (:func:`pad`'s count)."""
    first = pairs[0].ids
    most = min(len(p.ids) for p in pairs) - 1
    if len(pairs) > 1:
        most = min(most, common_head(first, pairs[1].ids))  # no longer than any two have: one array
    rows = np.stack([p.ids[:most] for p in pairs])  # (a loop over pairs would hold the event loop)
    return common_head(rows.min(axis=0), rows.max(axis=0)) if len(rows) > 1 else most


class DynamicBatcher:
    """Schedules and runs one model's pairs. Create it inside the running event loop."""

    def __init__(
        self,
        run: Callable[[Batch], np.ndarray],
        *,
        pad_id: int,
        with_types: bool,
        config: BatchingConfig,
        metrics: ModelMetrics,
        name: str = "model",
        throughput: Throughput | None = None,
        holds: Holds | None = None,
        batch_tokens: int | None = None,
        streams: int = 1,
        shares_head: bool = False,
    ) -> None:
        self.name = name
        self.shares_head = shares_head
        """Whether the graph reads a micro-batch's common head once (a decoder's shared-prefix
        graph): costs, cuts and speeds then count the tokens it runs
        (:func:`~rerank.service.backends.base.work_tokens`)."""
        self.holds = holds if holds is not None else Holds()
        """The edge's check's places, this batcher's and its sibling models' (:class:`Holds`)."""
        self.config = config
        self.metrics = metrics
        self.throughput = throughput or Throughput()
        self.batch_tokens = batch_tokens or config.batch_tokens or config.max_batch_tokens
        """Padded tokens a micro-batch is cut at: the model's fastest size, timed at start-up
        (:mod:`rerank.service.core.batch_sizing`), or the ``batch_tokens`` setting; within ``max_batch_tokens``."""
        self._queue = Scheduler(shares_head)
        self._reserved: dict[int, float] = {}
        """Costs admitted but not yet queued (the requests being tokenized)."""
        self._running_until = 0.0
        """When a stream frees up (monotonic; 0: one is free), by the running batches' estimated costs."""
        self.streams = streams
        """Micro-batches the model runs at once (the backend's streams), one per worker thread."""
        self._running: set[Job] = set()
        """The micro-batches the workers run (committed)."""
        self._worker = Worker(
            run,
            pad_id=pad_id,
            with_types=with_types,
            streams=streams,
            name=name,
            nice=self.config.inference_nice,
            on_taken=self._schedule,
            on_done=self._finish,
        )
        self._started = False
        self._closed = False
        self._refusal: RerankError | None = None
        self._stuck: set[Job] = set()
        """Running micro-batches past their stall deadline (their requests were answered)."""
        self.stall_reason: str | None = None
        """What the last :meth:`stall` found (None: inference works)."""

    @property
    def queued_pairs(self) -> int:
        return self._queue.queued_pairs

    def start(self) -> None:
        """Binds the batcher to the running event loop (where its results are delivered)."""
        if not self._started:
            self._worker.bind(asyncio.get_running_loop())
            self._started = True

    # ------------------------------------------------------------------------- admission

    def state(self) -> QueueState:
        """The queue as admission sees it now (on the event loop's thread)."""
        costs = [r.remaining_cost for r in self._queue.requests()]
        costs += self._reserved.values()
        return QueueState(tuple(costs), self._running_until, self._model_speed(), self.config.max_queue_seconds)

    def with_holds(self, state: QueueState) -> QueueState:
        """``state`` with the edge's held places counted as queued requests: what every
        admission decides on (this one's, or the edge's check's)."""
        return replace(state, costs=state.costs + tuple(self.holds.costs(self.name)))

    def estimated_wait(self, cost: float) -> float:
        """Seconds a request of ``cost`` would wait if admitted now (:meth:`QueueState.estimated_wait`)."""
        return self.state().estimated_wait(cost)

    def admit(self, cost: float, pairs: int, held: float | None = None) -> int:
        """Checks that a request of ``cost`` padded tokens and ``pairs`` pairs may wait in the
        queue, and reserves its place until :meth:`score` (or :meth:`release`). Returns the
        reservation. Raises :class:`QueueFull` (with a retry delay), :class:`TooManyDocuments`
        or :class:`Unavailable` (inference is stuck). ``held``: the cost the edge's check held a
        place at for this request (its claimed hold, already out of :attr:`holds`); a request
        costing at most :data:`MISESTIMATE` times that was admitted by the check and is not timed
        again (the queue's size cap, a drain and a stall still apply)."""
        self._refuse_if_closed()
        limit = self.config.max_queue_pairs
        if pairs > limit:
            self.metrics.reject("request_too_large")
            raise TooManyDocuments(
                f"this request needs {pairs} sequences, more than the queue holds ({limit}); "
                "send fewer documents per request",
                field="documents",
                metadata={"limit": str(limit)},
            )
        if self._queue.queued_pairs + pairs > limit:
            self.metrics.reject("queue_full")
            raise QueueFull(
                f"the queue holds {self._queue.queued_pairs} pairs and this request adds {pairs}; "
                f"the limit is {limit}: retry later",
                retry_after=retry_after(self._queue.queued_cost() / self._model_speed()),
            )
        if held is None or cost > MISESTIMATE * held:
            refusal = queue_time_refusal(self.with_holds(self.state()), cost)
            if refusal is not None:
                self.metrics.reject("queue_time")
                raise refusal
        reservation = id(object())
        self._reserved[reservation] = cost
        self._queue_changed()
        return reservation

    def early_size_refusal(self, pairs: float, pairs_per_cost: float) -> QueueFull | None:
        """The queue's size bound (``max_queue_pairs``) for a body of about ``pairs`` pairs before
        it is read: the pairs queued, and those of the requests admitted or held but not yet
        queued (their costs at ``pairs_per_cost``). A body let through is checked exactly once
        tokenized (:meth:`admit`); one larger than the whole queue is left to that check, whose
        answer (:class:`TooManyDocuments`) retrying would not change, and holds no room here."""
        limit = self.config.max_queue_pairs
        unqueued = [cost * pairs_per_cost for cost in (*self._reserved.values(), *self.holds.costs(self.name))]
        ahead = self._queue.queued_pairs + sum(p for p in unqueued if p <= limit)
        if pairs > limit or ahead + pairs <= limit:
            return None
        return QueueFull(
            f"the queue holds about {ahead:.0f} pairs and this request adds about {pairs:.0f}; "
            f"the limit is {limit}: retry later",
            retry_after=retry_after(self._queue.queued_cost() / self._model_speed()),
        )

    def release(self, reservation: int) -> None:
        if self._reserved.pop(reservation, None) is not None:
            self._queue_changed()

    def _queue_changed(self) -> None:
        """Updates the queue's gauges: pairs waiting, and the estimated seconds to work through
        them (and the admitted requests still tokenizing, and the batch in flight)."""
        in_flight = max(0.0, self._running_until - time.monotonic())
        waiting = self._queue.queued_cost() + sum(self._reserved.values())
        self.metrics.set_queue(self._queue.queued_pairs, in_flight + waiting / self._model_speed())

    # ------------------------------------------------------------------------- queueing

    def refuse(self, error: RerankError) -> None:
        """From now on new requests are refused with ``error``, and every request still waiting
        fails with it (the end of a drain: it gets an answer instead of a dropped call). A batch
        already on the model finishes; its requests' other pairs do not run."""
        self._refusal = error
        self._answer_waiting(error)

    def _answer_waiting(self, error: RerankError) -> None:
        """Every request still waiting fails with ``error``; nothing composed runs."""
        self._worker.clear()  # composed, not started: it does not run
        self._commit_started()
        for request in self._queue.requests():
            self._fail(request, error)
        self._queue.clear()
        self._schedule()

    def _fail(self, request: Request, error: RerankError) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        self._drop(request)

    # ------------------------------------------------------------------------- watchdog

    @property
    def stalled(self) -> bool:
        """Every stream is stuck on a micro-batch far past its expected end (:meth:`stall`)."""
        return len(self._stuck) >= self.streams

    def stall(self, now: float | None = None) -> str | None:
        """Why this model cannot be counted on to answer in time, or None (the server's watchdog
        asks, on the event loop, and reports the replica NOT_SERVING meanwhile):

        * a micro-batch has run :data:`STALL_FACTOR` times its expected duration and
          ``stall_seconds`` past its expected end: its requests get :class:`Unavailable` now (Envoy
          retries them on another replica); once every stream is stuck, so do the requests
          waiting and new ones (:attr:`stalled`), until a stuck micro-batch ends;
        * a request has waited ``stall_seconds`` past ``max_queue_seconds`` for its first
          micro-batch (the model is far slower than admission counts on)."""
        now = time.monotonic() if now is None else now
        self._commit_started()
        stall = self.config.stall_seconds
        for job in self._running - self._stuck:
            if now > job.until + max(stall, (STALL_FACTOR - 1) * (job.until - job.started)):
                self._stuck.add(job)
                error = self._stalled_error(job, now)
                log.error("%s: %s", self.name, error.message)
                for request in dict.fromkeys(r for r, _ in job.taken):
                    self._fail(request, error)
        if self.stalled:
            self._answer_waiting(self._stalled_error())
        self.stall_reason = None
        if self._stuck:
            self.stall_reason = self._stall_reason(min(self._stuck, key=lambda j: j.started), now)
        waiting = [r.enqueued_at for r in self._queue.requests() if r.first_batch_at is None and not r.cancelled]
        if self.stall_reason is None and waiting and now - min(waiting) > self.config.max_queue_seconds + stall:
            self.stall_reason = f"a request has waited {now - min(waiting):.1f} s for its first micro-batch"
        return self.stall_reason

    def _stall_reason(self, job: Job, now: float) -> str:
        return (
            f"a micro-batch of {len(job.pairs)} pairs has run {now - job.started:.1f} s, "
            f"expected {job.until - job.started:.2f} s"
        )

    def _refuse_if_closed(self) -> None:
        """Raises the drain's refusal while draining, or :class:`Unavailable` while inference is stuck."""
        if self._refusal is not None:
            self.metrics.reject("draining")
            raise self._refusal
        if self.stalled:
            self.metrics.reject("stalled")
            raise self._stalled_error()

    def _stalled_error(self, job: Job | None = None, now: float | None = None) -> Unavailable:
        if job is None:
            job = min(self._stuck, key=lambda j: j.started)
        reason = self._stall_reason(job, time.monotonic() if now is None else now)
        return Unavailable(f"inference is stuck on this replica ({reason}); retry the request", reason="STALLED")

    async def close(self) -> None:
        """Stops: the batch in flight finishes, nothing else runs."""
        self._closed = True
        self._worker.shutdown()

    async def score(
        self,
        pairs: list[Pair],
        *,
        client: str = "",
        request_id: str = "",
        reservation: int | None = None,
        head: int | None = None,
    ) -> np.ndarray:
        """Logits for ``pairs``, in their order. Admits the request first unless ``reservation``
        (from :meth:`admit`, on the request's estimated cost) says it was: then it is queued at
        once, unless it costs over :data:`MISESTIMATE` times its estimate or has more pairs than
        the queue holds. ``head``: leading tokens the caller knows they have in common (the
        encoder's :attr:`~rerank.service.core.tokenization.EncodedRequest.head`); found here,
        on the event loop, otherwise. Raises :class:`QueueFull` or
        :class:`TooManyDocuments`."""
        if not pairs:
            if reservation is not None:
                self.release(reservation)
            return np.zeros(0)
        if not self.shares_head:
            head = 0
        elif head is None:
            head = common_head_of(pairs)
        cost = cost_of(pairs, head, self.budget())
        estimated = self._reserved.get(reservation, 0.0) if reservation is not None else 0.0
        if reservation is None or cost > MISESTIMATE * estimated or len(pairs) > self.config.max_queue_pairs:
            if reservation is not None:
                self.release(reservation)
            reservation = self.admit(cost, len(pairs))
        self.release(reservation)
        self._refuse_if_closed()
        self.start()
        # Shortest first: requests served round-robin then advance through similar lengths
        # together, so a micro-batch mixing them pads little.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
        request = Request(pairs, order, asyncio.get_running_loop().create_future(), client, request_id, cost, head)
        request.trace = tracing.capture()
        self._queue.add(request)
        self._schedule()
        try:
            return await request.future
        except asyncio.CancelledError:
            # The client went away: drop whatever of this request has not reached the model.
            if not request.cancelled:
                self._drop(request)
                self.metrics.cancelled_requests += 1
                self._schedule()
            raise

    def _drop(self, request: Request) -> None:
        """Takes ``request``'s waiting pairs out of the queue (the caller then reschedules)."""
        self._commit_started()  # what the worker already took is not waiting any more
        self._queue.drop(request)

    # ------------------------------------------------------------------------- scheduling

    def budget(self) -> int:
        """Padded tokens the next micro-batch may hold: the model's fastest size
        (:attr:`batch_tokens`), and at most ``batch_seconds`` of work, but never fewer than
        :data:`MIN_BATCH_TOKENS` by that time limit (below that, per-call overhead dominates)."""
        timed = int(self.throughput.tokens_per_second * self.config.batch_seconds)
        return min(self.config.max_batch_tokens, self.batch_tokens, max(MIN_BATCH_TOKENS, timed))

    def _commit(self, job: Job) -> None:
        """The worker started ``job``: its pairs leave the queue, and it runs until its estimated end."""
        self._queue.commit(job)
        job.until = job.started + self.throughput.seconds(cost_of(job.pairs, job.head, self.budget()))
        self._running.add(job)
        self._update_running_until()
        self._record_first_batch(job.taken, job.started, job.started_ns)

    def _model_speed(self) -> float:
        """Padded tokens per second the model works through a queue at: every stream's."""
        return self.throughput.tokens_per_second * self.streams

    def _update_running_until(self) -> None:
        """When a new micro-batch could start: now if a stream is free, else when the first of
        the running ones should end."""
        busy = len(self._running) >= self.streams
        self._running_until = min(job.until for job in self._running) if busy else 0.0

    def _commit_started(self) -> None:
        for job in self._worker.taken():
            self._commit(job)

    def _schedule(self) -> None:
        """Commits what the workers have taken, composes the next batches from the queue as it is
        now and offers them to the worker. Called on the event loop after every queue change."""
        if self._closed:
            return
        while True:
            self._commit_started()
            free = self.streams - len(self._running)
            jobs = (
                []
                if self._refusal is not None
                else self._queue.compose(self.budget(), self.config.max_batch_pairs, free)
            )
            if self._worker.offer(jobs):  # else a worker took from the previous slot meanwhile: commit it first
                break
        self._queue_changed()

    def _finish(self, job: Job) -> None:
        """On the event loop: ``job``'s results go to their requests."""
        self._commit_started()  # (normally done already: the worker posts that first)
        self._running.discard(job)
        if job in self._stuck:
            self._stuck.discard(job)
            log.warning("%s: the stuck micro-batch ended after %.1f s", self.name, job.seconds)
        self._update_running_until()
        if isinstance(job.outcome, list):
            for (request, index), result in zip(job.taken, job.outcome, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "pair %d of request %s failed",
                        index,
                        request.request_id or "-",
                        exc_info=result,
                        extra={"request_id": request.request_id},
                    )
                    if not request.future.done():
                        request.future.set_exception(result)
                    self._drop(request)
                else:
                    self._deliver(request, index, result)
            self._schedule()
            return
        assert job.outcome is not None
        logits, batch = job.outcome
        self.throughput.record(batch.work(self.shares_head), job.seconds, full=self.budget())
        self.metrics.record_batch(
            pairs=len(job.pairs),
            padded_tokens=int(batch.input_ids.size),
            real_tokens=int(batch.attention_mask.sum()),
            seconds=job.seconds,
        )
        self._trace_batch(job.taken, job.started_ns, job.ended_ns, int(batch.input_ids.size))
        for (request, index), logit in zip(job.taken, logits, strict=True):
            self._deliver(request, index, float(logit))
        self._queue_changed()

    def _record_first_batch(self, taken: list[tuple[Request, int]], started: float, started_ns: int) -> None:
        """Each request whose first pairs go to the model now has finished waiting: its queue
        time and its ``rerank.queue`` span."""
        for request in dict.fromkeys(r for r, _ in taken):
            if request.first_batch_at is None:
                request.first_batch_at = started
                self.metrics.record_queue_wait(started - request.enqueued_at)
                tracing.record("rerank.queue", request.trace, request.enqueued_ns, started_ns)

    def _trace_batch(self, taken: list[tuple[Request, int]], start_ns: int, end_ns: int, padded_tokens: int) -> None:
        """A ``rerank.inference`` span for each request in the micro-batch, with its share."""
        if not tracing.enabled():
            return
        shares = collections.Counter(r for r, _ in taken)
        for request, share in shares.items():
            attributes: tracing.Attributes = {
                "rerank.request_pairs": share,
                "rerank.batch_pairs": len(taken),
                "rerank.batch_tokens": padded_tokens,
            }
            tracing.record("rerank.inference", request.trace, start_ns, end_ns, attributes)

    def _deliver(self, request: Request, index: int, logit: float) -> None:
        if request.future.done():
            return
        request.scores[index] = logit
        request.done += 1
        if request.done == len(request.pairs):
            request.future.set_result(request.scores)
