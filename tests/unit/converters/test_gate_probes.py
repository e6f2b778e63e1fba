"""The variant gate: its probe set and its report (pure numpy, no model)."""

from __future__ import annotations

import collections
import itertools
import re

import numpy as np
import pytest

from rerank.converters import gate_probes
from rerank.converters.gate_probes import gate_pairs, gate_report, passes, spearman


def _reference(n_queries: int = 4, per_query: int = 30, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, 2.0, n_queries * per_query)
    groups = [f"q{i}" for i in range(n_queries) for _ in range(per_query)]
    return scores, groups


def test_probe_set_shape_is_what_the_gate_promises():
    pairs, groups = gate_pairs()
    assert 250 <= len(pairs) <= 400 and len(groups) == len(pairs)
    counts = collections.Counter(groups)
    assert len(counts) >= 8 and min(counts.values()) >= 20
    documents = [d for _, d in pairs]
    assert sum(len(d) > 1500 for d in documents) >= 10  # long: past 256 tokens
    assert sum(len(d) <= 12 for d in documents) >= 20  # short
    scripts = {
        "cjk": "\u4e00-\u9fff",
        "kana": "\u3040-\u30ff",
        "cyrillic": "\u0400-\u04ff",
        "arabic": "\u0600-\u06ff",
        "hangul": "\uac00-\ud7af",
    }
    for name, span in scripts.items():
        assert any(re.search(f"[{span}]", d) for d in documents), name
    assert pairs == gate_pairs()[0]  # deterministic


def test_probe_set_has_near_duplicates_per_query():
    pairs, groups = gate_pairs()
    by_group = collections.defaultdict(list)
    for (_, doc), g in zip(pairs, groups, strict=True):
        by_group[g].append(doc)
    for topic in gate_probes.TOPICS:
        docs = set(by_group[topic.key])
        fills = [topic.template.format(*f) for f in itertools.product(*topic.slots)]
        assert sum(f in docs for f in fills) >= 6, topic.key


def test_spearman_handles_ties_and_order():
    assert spearman(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 1, 2]), np.array([5.0, 5, 9])) == pytest.approx(1.0)
    assert spearman(np.ones(4), np.ones(4)) == 1.0


def test_tiny_noise_passes():
    ref, groups = _reference()
    variant = ref + np.random.default_rng(1).normal(0, 1e-4, ref.shape)
    report = gate_report(ref, variant, groups)
    assert report["min_spearman"] > 0.999 and report["all_top3_kept"]
    assert report["min_top10_agreement"] == 1.0
    assert report["max_abs_diff"] < 1e-3
    assert passes(report)


def test_one_query_swapping_its_top_two_fails_on_top3_alone():
    # The two best documents of one query 0.01 logit apart swap places: Spearman stays above
    # 0.999 and |Δ| is tiny, so only the top-3 rule can catch it.
    ref, groups = _reference()
    idx = [i for i, g in enumerate(groups) if g == "q2"]
    order = sorted(idx, key=lambda i: -ref[i])
    ref[order[1]] = ref[order[0]] - 0.01
    variant = ref.copy()
    variant[order[0]], variant[order[1]] = ref[order[1]], ref[order[0]]
    report = gate_report(ref, variant, groups)
    assert report["min_spearman"] > 0.999 and report["max_abs_diff"] == pytest.approx(0.01)
    assert report["queries_top3_changed"] == ["q2"]
    assert report["queries_top3_set_changed"] == []  # same three documents, two swapped
    assert report["per_query"]["q2"]["top10_agreement"] == 1.0
    assert not passes(report)


def test_near_duplicates_reordered_fail_on_spearman_alone():
    # A query whose top 3 stand clear and whose 27 other documents sit close together
    # (near-duplicates, 0.15 logit end to end); a variant with ±0.04 noise on those keeps the
    # top 3 and |Δ| <= 0.05, but the ranking inside the cluster falls apart.
    rng = np.random.default_rng(3)
    spread = rng.normal(0, 2.0, 30)
    near = np.concatenate([[3.0, 2.5, 2.0], 1.0 + np.linspace(0, 0.15, 27)])
    ref = np.concatenate([spread, near])
    groups = ["spread"] * 30 + ["near-dup"] * 30
    variant = ref.copy()
    variant[33:] += rng.uniform(-0.04, 0.04, 27)
    report = gate_report(ref, variant, groups)
    assert report["max_abs_diff"] <= gate_probes.MAX_ABS_DIFF and report["all_top3_kept"]
    assert report["per_query"]["spread"]["spearman"] == pytest.approx(1.0)
    assert report["per_query"]["near-dup"]["spearman"] < 0.99
    assert report["min_spearman"] == report["per_query"]["near-dup"]["spearman"]
    assert report["per_query"]["near-dup"]["max_rel_diff"] == pytest.approx(
        report["per_query"]["near-dup"]["max_abs_diff"] / 2.0, rel=1e-6
    )
    assert not passes(report)


def test_a_uniform_shift_passes_rank_checks_but_fails_on_abs_diff():
    ref, groups = _reference()
    report = gate_report(ref, ref + 0.2, groups)
    assert report["min_spearman"] == pytest.approx(1.0) and report["all_top3_kept"]
    assert report["max_abs_diff"] == pytest.approx(0.2)
    assert not passes(report)
    assert passes(gate_report(ref, ref + 0.049, groups))


def test_groups_need_not_be_contiguous_and_shapes_are_checked():
    ref, groups = _reference(n_queries=3, per_query=12)
    perm = np.random.default_rng(5).permutation(len(ref))
    shuffled = gate_report(ref[perm], ref[perm], [groups[i] for i in perm])
    assert shuffled["queries"] == 3 and passes(shuffled)
    assert {q["pairs"] for q in shuffled["per_query"].values()} == {12}
    with pytest.raises(ValueError):
        gate_report(ref, ref[:-1], groups)
    with pytest.raises(ValueError):
        gate_report(ref, np.full_like(ref, np.nan), groups)
