"""Runs one model's micro-batches on its own threads, one per stream, with failure isolation.

The event loop composes the next micro-batches (the slot: one, or one for each idle stream)
while the current ones run, and offers them again whenever the queue changes, so a request that
arrives while a batch runs still joins the very next one. A worker thread takes from the slot
the moment its batch is done, so the model never waits for the event loop to come round (a
loop busy parsing or answering requests could take milliseconds). Padding and inference happen
here, never on the event loop. A micro-batch that fails is run again pair by pair, so one bad
pair fails its own request only. Only the slot, the list of taken batches and the count of
running workers cross threads, under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rerank.service.backends.base import Batch, pad
from rerank.service.core.priority import lower_current_thread
from rerank.service.core.scheduler import Job
from rerank.service.core.tokenization import Pair

log = logging.getLogger(__name__)


class Worker:
    """Up to ``streams`` threads that run the offered micro-batches with ``run``. It tells the
    event loop (``loop``, bound by :meth:`bind`) through two callbacks: ``on_taken()`` once a
    thread took a batch (commit it, compose the next), ``on_done(job)`` once it ran, with
    :attr:`Job.outcome` set."""

    def __init__(
        self,
        run: Callable[[Batch], np.ndarray],
        *,
        pad_id: int,
        with_types: bool,
        streams: int,
        name: str,
        nice: int = 0,
        on_taken: Callable[[], None],
        on_done: Callable[[Job], None],
    ) -> None:
        self._run = run
        self._pad_id = pad_id
        self._with_types = with_types
        self._streams = streams
        self._on_taken = on_taken
        self._on_done = on_done
        self._executor = ThreadPoolExecutor(
            max_workers=streams, thread_name_prefix=f"infer-{name}", initializer=lower_current_thread, initargs=(nice,)
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._slot: list[Job] = []
        """The micro-batches the workers run next, in order (composed, not committed): one, or
        one per idle stream. Under the lock."""
        self._taken: list[Job] = []
        """Micro-batches a worker took from the slot that the loop has not collected. Under the lock."""
        self._drivers = 0
        """Workers running slots (or about to). Under the lock."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the callbacks run on."""
        self._loop = loop

    def taken(self) -> list[Job]:
        """The batches taken since the last call (started, at :attr:`Job.started`)."""
        with self._lock:
            taken, self._taken = self._taken, []
        return taken

    def offer(self, jobs: list[Job]) -> bool:
        """Replaces the slot with ``jobs`` and starts a thread for each that no running one will
        take. False, changing nothing, when a thread took a batch that :meth:`taken` has not
        handed over yet: the caller collects it and composes again."""
        with self._lock:
            if self._taken:
                return False
            self._slot = jobs
            wake = min(len(jobs), self._streams - self._drivers)
            self._drivers += wake
        for _ in range(wake):
            self._executor.submit(self._drive)
        return True

    def clear(self) -> None:
        """Empties the slot: what is composed and not started does not run."""
        with self._lock:
            self._slot = []

    def shutdown(self) -> None:
        """The batches running finish, nothing else runs."""
        self.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _drive(self) -> None:
        """A worker thread: runs the slot's batches one after the other until it finds none."""
        while True:
            with self._lock:
                if not self._slot:
                    self._drivers -= 1
                    return
                job = self._slot.pop(0)
                job.started, job.started_ns = time.monotonic(), time.time_ns()
                self._taken.append(job)
            self._post(self._on_taken)  # commit it, and compose the next while this one runs
            job.outcome = self._execute(job.pairs)
            job.seconds, job.ended_ns = time.monotonic() - job.started, time.time_ns()
            self._post(self._on_done, job)

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _execute(self, pairs: list[Pair]) -> tuple[np.ndarray, Batch] | list[float | Exception]:
        """The batch's logits (and the padded batch), or after a failure, each pair's result
        alone, so one bad pair fails alone."""
        try:
            return self._infer(pairs)
        except Exception:
            log.exception("a micro-batch of %d pairs failed; running its pairs one by one", len(pairs))
            return [self._infer_alone(pair) for pair in pairs]

    def _infer(self, pairs: list[Pair]) -> tuple[np.ndarray, Batch]:
        batch = pad(pairs, self._pad_id, self._with_types)
        return self._run(batch), batch

    def _infer_alone(self, pair: Pair) -> float | Exception:
        try:
            return float(self._infer([pair])[0][0])
        except Exception as exc:  # noqa: BLE001 - the pair's request gets this error
            return exc
