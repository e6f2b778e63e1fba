"""What a graph is fed for a padded micro-batch: the rows, or their common head once and each
row after it (a decoder's shared-prefix form)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from rerank.service.backends.base import Batch, graph_feed, pad
from rerank.service.model_folder import (
    ATTENTION_MASK,
    INPUT_IDS,
    PREFIX_IDS,
    PREFIX_MASK,
    PREFIX_ROW,
    TOKEN_TYPE_IDS,
)

SHARED_FORM = (PREFIX_IDS, PREFIX_MASK, PREFIX_ROW, INPUT_IDS, ATTENTION_MASK)


@dataclass(frozen=True)
class Seq:
    ids: np.ndarray
    type_ids: np.ndarray


def seq(*ids: int) -> Seq:
    return Seq(np.array(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int64))


def test_pad_counts_the_tokens_every_row_starts_with() -> None:
    batch = pad([seq(1, 2, 3, 4, 5), seq(1, 2, 3, 9), seq(1, 2, 3, 4, 7, 8)], 0, False)
    assert batch.shared == 3


def test_the_shared_head_leaves_every_row_a_token_of_its_own() -> None:
    assert pad([seq(1, 2, 3), seq(1, 2, 3, 4)], 0, False).shared == 2
    assert pad([seq(5, 6, 7)], 0, False).shared == 2


def test_padding_is_not_part_of_the_head() -> None:
    """Two rows that agree up to the shorter one's end: the pad token is not shared text."""
    assert pad([seq(1, 2), seq(1, 2, 0, 0)], 0, False).shared == 1


def test_a_plain_graph_gets_the_padded_rows() -> None:
    batch = pad([seq(1, 2, 3), seq(1, 4)], 0, False)
    feed = graph_feed(batch, (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS))
    assert set(feed) == {INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS}
    assert feed[INPUT_IDS].tolist() == [[1, 2, 3], [1, 4, 0]]
    assert not feed[TOKEN_TYPE_IDS].any()


def test_a_shared_prefix_graph_gets_the_head_once_and_each_row_after_it() -> None:
    batch = pad([seq(1, 2, 3, 4, 5), seq(1, 2, 3, 9), seq(1, 2, 3, 4, 7, 8)], 0, False)
    feed = graph_feed(batch, SHARED_FORM)
    assert feed[PREFIX_IDS].tolist() == [[1, 2, 3]] and feed[PREFIX_MASK].tolist() == [[1, 1, 1]]
    assert feed[PREFIX_ROW].tolist() == [0, 0, 0]
    assert feed[INPUT_IDS].tolist() == [[4, 5, 0], [9, 0, 0], [4, 7, 8]]
    assert feed[ATTENTION_MASK].tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]


def test_timing_batches_share_one_token_so_they_cost_the_most() -> None:
    batch = Batch.filled(4, 16, 7)
    assert batch.shared == 1
    assert graph_feed(batch, SHARED_FORM)[INPUT_IDS].shape == (4, 15)


def test_a_shared_prefix_graph_refuses_a_batch_with_no_head() -> None:
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    with pytest.raises(ValueError, match="common head"):
        graph_feed(Batch(ids, np.ones_like(ids), None, shared=0), SHARED_FORM)
