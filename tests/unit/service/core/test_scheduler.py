"""Composing micro-batches: the common head a batch is cut by is the one its padded batch has."""

from __future__ import annotations

import asyncio

import numpy as np

from rerank.service.backends.base import pad
from rerank.service.core.scheduler import Request, Scheduler
from rerank.service.core.tokenization import Pair


async def test_a_composed_batch_knows_the_common_head_its_padded_rows_have() -> None:
    # Requests from a few prompts (each a run of one token), their documents beginning alike
    # or not, composed under budgets from one pair to many: every batch's head, tracked as it
    # was filled, is what pad() finds in its rows.
    rng = np.random.default_rng(7)
    loop = asyncio.get_running_loop()
    for trial in range(60):
        scheduler = Scheduler(shares_head=True)
        for number in range(int(rng.integers(1, 5))):
            prompt = np.full(int(rng.integers(2, 30)), int(rng.integers(1, 4)))
            opening = rng.integers(50, 53, size=int(rng.integers(0, 4)))  # documents that begin alike
            pairs = []
            for doc in range(int(rng.integers(1, 9))):
                ids = np.concatenate([prompt, opening, rng.integers(60, 90, size=int(rng.integers(1, 20)))])
                pairs.append(Pair(doc, ids.astype(np.int64), np.zeros(len(ids), dtype=np.int64)))
            order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
            scheduler.add(Request(pairs, order, loop.create_future(), f"key{number % 2}", f"r{number}", 1.0))
        budget = int(rng.integers(20, 400))
        for job in scheduler.compose(budget, most=64, free=int(rng.integers(1, 3))):
            assert job.head == pad(job.pairs, pad_id=0, with_types=False).shared, (trial, budget)
