"""The accuracy columns: a peer's logits against the reference on the gate's probes."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

from bench.accuracy import Accuracy, flatten, probes
from rerank.converters.gate_probes import gate_pairs


def test_probes_group_the_gate_pairs_by_query_in_order() -> None:
    pairs, groups = gate_pairs()
    probe_set = probes()
    assert len(probe_set) == len(set(groups)) == 10
    assert [(q, d) for _, q, docs in probe_set for d in docs] == pairs
    scores, flat_groups = flatten(probe_set, lambda query, documents: [float(len(d)) for d in documents])
    assert flat_groups == groups and scores == [float(len(d)) for _, d in pairs]


def test_flatten_refuses_a_peer_that_drops_documents() -> None:
    with pytest.raises(ValueError, match="scores for"):
        flatten(probes(), lambda query, documents: [0.0] * (len(documents) - 1))


def test_identical_scores_pass_and_shifted_or_reordered_ones_fail() -> None:
    groups = ["a"] * 5 + ["b"] * 5
    reference = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    same = Accuracy.of(reference, reference, groups)
    assert same.min_spearman == pytest.approx(1.0)
    assert (same.top3_kept, same.queries, same.max_abs_diff, same.gate) == (2, 2, 0.0, True)

    shifted = [s + 0.1 for s in reference]  # same order everywhere, but 0.1 logit off
    moved = Accuracy.of(reference, shifted, groups)
    assert (moved.min_spearman, moved.top3_kept, moved.gate) == (pytest.approx(1.0), 2, False)
    assert moved.max_abs_diff == pytest.approx(0.1)

    swapped = [4.0, 5.0, 3.0, 2.0, 1.0, *reference[5:]]  # query a's top two change places
    accuracy = Accuracy.of(reference, swapped, groups)
    assert (accuracy.top3_kept, accuracy.queries, accuracy.gate) == (1, 2, False)
    assert accuracy.min_spearman == pytest.approx(0.9)
    assert accuracy.cells() == ["0.9000", "1/2", "1", "FAIL"]
