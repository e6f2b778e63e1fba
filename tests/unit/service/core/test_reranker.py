"""Ranking (order, ties, ``top_n``, ``normalize``) and a served model keeping each document's best window."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rerank.service.core.batching import common_head_of, cost_of
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.reranker import Ranked, Scored, ServedModel, rank
from rerank.service.core.tokenization import EncodedRequest, TokenizerPool
from rerank.service.model_folder import read_model_folder
from tests.support.stand_in import StandInBackend, write_stand_in_model


def scored(scores: list[float], truncated: list[int] | None = None, windows: list[int] | None = None) -> Scored:
    n = len(scores)
    encoded = EncodedRequest([], truncated or [0] * n, windows or [1] * n)
    return Scored(np.asarray(scores, dtype=np.float64), encoded)


def indexes(ranked: list[Ranked]) -> list[int]:
    return [r.index for r in ranked]


def test_best_first() -> None:
    ranked = rank(scored([0.1, 3.0, -2.0, 1.5]), top_n=None, normalize=False)
    assert indexes(ranked) == [1, 3, 0, 2]
    assert [r.score for r in ranked] == [3.0, 1.5, 0.1, -2.0]  # the logits themselves


def test_ties_keep_the_documents_order() -> None:
    assert indexes(rank(scored([1.0, 2.0, 1.0, 2.0, 1.0]), None, False)) == [1, 3, 0, 2, 4]
    assert indexes(rank(scored([0.0] * 6), None, False)) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("top_n", "expected"),
    [(None, [1, 3, 0, 2]), (1, [1]), (2, [1, 3]), (4, [1, 3, 0, 2]), (5, [1, 3, 0, 2]), (1000, [1, 3, 0, 2])],
)
def test_top_n_keeps_the_best(top_n: int | None, expected: list[int]) -> None:
    assert indexes(rank(scored([0.1, 3.0, -2.0, 1.5]), top_n, False)) == expected


def test_normalize_is_the_sigmoid_of_the_logit() -> None:
    logits = [-7.5, -1.0, 0.0, 0.25, 3.0, 30.0]
    ranked = rank(scored(logits), None, normalize=True)
    for r in ranked:
        assert r.score == pytest.approx(1.0 / (1.0 + math.exp(-logits[r.index])), rel=1e-12, abs=0)
    assert indexes(ranked) == indexes(rank(scored(logits), None, normalize=False))


def test_normalize_stays_finite_for_huge_logits() -> None:
    """``1 / (1 + exp(-x))`` overflows for x = -1000; the served sigmoid must not."""
    ranked = rank(scored([-1000.0, 1000.0, -745.0, 710.0]), None, normalize=True)
    by_index = {r.index: r.score for r in ranked}
    assert all(math.isfinite(s) for s in by_index.values())
    assert by_index[1] == 1.0 and by_index[3] == 1.0
    assert by_index[0] == 0.0 and 0.0 < by_index[2] < 1e-300
    assert indexes(ranked)[:2] == [1, 3] and indexes(ranked)[-1] == 0


def test_each_result_carries_its_documents_counts() -> None:
    ranked = rank(scored([0.0, 5.0, 2.0], truncated=[7, 0, 3], windows=[1, 4, 2]), top_n=2, normalize=False)
    assert [(r.index, r.truncated_tokens, r.windows) for r in ranked] == [(1, 0, 4), (2, 3, 2)]


# --- a served model: tokenization -> batching -> the backend -> one score per document ----------------


@contextlib.asynccontextmanager
async def served_stand_in(models_dir: Path) -> AsyncIterator[ServedModel]:
    """A ServedModel on the stand-in backend, made and closed on the test's own event loop."""
    folder = write_stand_in_model(models_dir, "stand-in", max_length=16)  # room 12 beside a one-word query
    config = read_model_folder(folder)
    pool = TokenizerPool(threads=1, max_waiting=4)
    model = ServedModel(
        folder,
        config,
        StandInBackend.for_folder(folder, config),
        batching=BatchingConfig(max_batch_tokens=64),
        tokenizers=pool,
    )
    try:
        yield model
    finally:
        await model.close()
        pool.shutdown()


async def test_a_graph_that_reads_the_head_once_is_priced_with_the_query_once(tmp_path: Path) -> None:
    """Eight three-word documents under a forty-word query: where the graph reads the rows'
    common head once (a decoder's shared-prefix graph), the estimate made before tokenizing
    counts the query once, as the exact cost after tokenizing does, not once a document."""
    folder = write_stand_in_model(tmp_path, "shared-head", max_length=128)
    config = replace(read_model_folder(folder), graph={"shared_prefix": 1})
    pool = TokenizerPool(threads=1, max_waiting=4)
    served = ServedModel(
        folder, config, StandInBackend.for_folder(folder, config), batching=BatchingConfig(), tokenizers=pool
    )
    query = " ".join(["panda"] * 40)
    documents = [f"{word} bamboo forest" for word in ("a", "the", "red", "car", "fox", "dog", "quick", "river")]
    try:
        estimated, pairs = served.estimate(query, documents, "truncate")
        encoded = served.encoder.encode(query, documents, "truncate")
        exact = cost_of(encoded.pairs, common_head_of(encoded.pairs), served.batcher.budget())
        assert served.batcher.shares_head and pairs == 8
        assert 0.75 * exact <= estimated <= 1.5 * exact  # (characters per token: a learned guess)
        assert exact < 0.3 * cost_of(encoded.pairs)  # the query once, not eight times
        heads: list[int | None] = []
        score = served.batcher.score

        async def spy(pairs, **kwargs):  # type: ignore[no-untyped-def]
            heads.append(kwargs.get("head"))
            return await score(pairs, **kwargs)

        served.batcher.score = spy  # type: ignore[method-assign]
        await served.score(query, documents)
        assert heads == [common_head_of(encoded.pairs)]  # the encoder's, not scanned for on the event loop
    finally:
        await served.close()
        pool.shutdown()


async def test_a_long_document_scores_its_best_window(tmp_path: Path) -> None:
    far = " ".join(["dog"] * 30 + ["panda", "panda"])  # the query's word only near the end
    near = " ".join(["panda"] + ["dog"] * 31)
    documents = [far, near, "red car", "panda bamboo panda"]
    async with served_stand_in(tmp_path) as served:
        truncated = await served.score("panda", documents, "truncate")
        windowed = await served.score("panda", documents, "window")
    assert truncated.scores.tolist() == [0.0, 1.0, 0.0, 2.0]
    assert truncated.encoded.truncated_tokens == [20, 20, 0, 0]
    assert windowed.scores.tolist() == [2.0, 1.0, 0.0, 2.0]  # the best of each document's windows
    # 32 tokens in windows of 12 overlapping by 3: [0, 12), [9, 21), [18, 30), [27, 32).
    assert windowed.encoded.windows == [4, 4, 1, 1] and windowed.encoded.truncated_tokens == [0, 0, 0, 0]
    assert served.metrics.requests == 2 and served.metrics.pairs == 4 + 10


async def test_the_early_price_of_a_body_follows_the_exact_estimate_per_byte(tmp_path: Path) -> None:
    """Many short documents under one long query: the query is paid once per pair, which only
    the exact estimate sees. After requests of that shape, a body of their size is priced (before
    it is read) at close to the exact cost, leaning low by the JSON allowance."""
    query = "panda " * 4
    documents = ["a bear"] * 50
    async with served_stand_in(tmp_path) as served:
        for _ in range(40):
            await served.score(query, documents, "truncate")
        cost, _ = served.estimate(query, documents, "truncate")
        body = len(json.dumps({"query": query, "documents": documents}).encode())
        early = served.price.of(body)
    assert 0.8 * cost <= early <= cost


async def test_before_any_request_a_body_is_priced_by_the_models_own_tokenizer_and_context(tmp_path: Path) -> None:
    """The first burst of bodies is admitted at the price the model starts with: that must be
    the model's, not a constant. The stand-in reads 16 tokens a pair, so a passage of ~80 words
    costs a fraction of what 4 characters a token would say (a decoder's long prompt is the
    opposite case)."""
    words = ("panda", "bamboo", "forest", "mountain", "river", "dog", "cat", "red", "car", "bear", "leaves")
    query = "where do pandas live"
    documents = [" ".join(words[(i + k) % len(words)] for k in range(80)) for i in range(30)]
    async with served_stand_in(tmp_path) as served:
        assert served.metrics.requests == 0
        cost, _ = served.estimate(query, documents, "truncate")
        early = served.price.of(len(json.dumps({"query": query, "documents": documents}).encode()))
    assert 0.7 * cost <= early <= 1.1 * cost


async def test_a_request_is_queued_on_the_admission_it_got_before_tokenizing(tmp_path: Path) -> None:
    """The served model admits a request on its estimated cost, tokenizes it, and queues it on
    that admission: not checked a second time, which refused work already begun (and bodies the
    early check had held a place for) when the queue had grown meanwhile."""
    async with served_stand_in(tmp_path) as served:
        batcher = served.batcher
        score = batcher.score
        reservations: list[int | None] = []

        async def spy(pairs, **kwargs):  # type: ignore[no-untyped-def]
            reservations.append(kwargs.get("reservation"))
            assert kwargs.get("reservation") in batcher._reserved, "the admission's reservation is still held"
            return await score(pairs, **kwargs)

        batcher.score = spy  # type: ignore[method-assign]
        result = await served.score("panda", ["panda bamboo", "red car"], "truncate")
    assert result.scores.tolist() == [1.0, 0.0]
    assert len(reservations) == 1 and reservations[0] is not None
