"""Inference below the event loop's priority (:mod:`rerank.service.core.priority`): real threads,
the kernel's own niceness."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from rerank.service.backends.base import Batch
from rerank.service.core.batching import DynamicBatcher
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.metrics import ModelMetrics
from rerank.service.core.priority import lower_current_thread, run_lowered
from rerank.service.core.tokenization import Pair

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread niceness is Linux's")


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_threads_created_by_a_lowered_thread_inherit_its_priority():
    """What the runtimes' own pools rely on: they are created while a model loads."""
    base = niceness()

    def load() -> tuple[int, int]:
        seen: list[int] = []
        pool_thread = threading.Thread(target=lambda: seen.append(niceness()))
        pool_thread.start()
        pool_thread.join()
        return niceness(), seen[0]

    assert run_lowered(5, load) == (min(19, base + 5), min(19, base + 5))
    assert niceness() == base, "the caller's own thread keeps its priority"


def test_run_lowered_hands_back_the_exception():
    def fail() -> None:
        raise ValueError("bad model folder")

    with pytest.raises(ValueError, match="bad model folder"):
        run_lowered(5, fail)


def test_zero_changes_nothing():
    base = niceness()
    assert run_lowered(0, niceness) == base
    lower_current_thread(0)
    assert niceness() == base


async def test_micro_batches_run_on_lowered_threads():
    """The worker threads that call the runtime are lowered too (they are created on the loop's
    thread, which keeps its priority)."""
    base = niceness()
    seen: list[int] = []

    def model(batch: Batch) -> np.ndarray:
        seen.append(niceness())
        return np.ones(len(batch.input_ids))

    config = BatchingConfig(inference_nice=3)
    batcher = DynamicBatcher(model, pad_id=0, with_types=False, config=config, metrics=ModelMetrics())
    ids = np.full(4, 7, dtype=np.int64)
    assert list(await batcher.score([Pair(0, ids, np.zeros(4, dtype=np.int64))])) == [1.0]
    await batcher.close()
    assert seen == [min(19, base + 3)]
    assert niceness() == base
