"""The bench's targets of issue 11 against Infinity and sentence-transformers, on made-up
measurements (no servers)."""

from __future__ import annotations

import pytest

# bench.measure imports bench.models, which reads rerank.converters.variants: the [convert] extra.
pytest.importorskip("onnx", reason="needs the [convert] extra")

from bench.measure import Measurement
from bench.report import targets


def cell(peer: str, workload: str, pairs_per_s: float, latencies: list[float]) -> Measurement:
    m = Measurement("minilm-ce", peer, "fp32", workload, latencies=latencies, seconds=10.0)
    m.pairs = int(pairs_per_s * m.seconds)
    return m


def by_goal(measurements: list[Measurement]) -> dict[str, tuple[float, bool]]:
    return {t.goal: (t.value, t.passed) for t in targets(measurements)}


def test_w1_w2_w3_targets_against_infinity_and_sentence_transformers() -> None:
    goals = by_goal(
        [
            cell("grpc-auto", "W1", 90.0, [0.7]),
            cell("grpc-ov-fp32", "W1", 40.0, [1.6]),
            cell("st-fp32", "W1", 25.0, [2.5]),
            cell("infinity-fp32", "W1", 32.0, [2.0]),
            cell("grpc-auto", "W2", 100.0, [4.0] * 50 + [5.0] * 50),
            cell("infinity-fp32", "W2", 30.0, [10.0] * 100),
            cell("grpc-auto", "W3", 0, [0.010] * 20),
            cell("infinity-fp32", "W3", 0, [0.025] * 20),
        ]
    )
    assert goals["W1 throughput grpc-auto / st-fp32"] == (pytest.approx(3.6), True)
    assert goals["W1 throughput grpc-auto / infinity-fp32"] == (pytest.approx(90 / 32), False)
    assert goals["W1 throughput grpc-ov-fp32 / st-fp32"] == (pytest.approx(1.6), True)
    assert goals["W2 throughput grpc-auto / infinity-fp32"] == (pytest.approx(100 / 30), True)
    assert goals["W3 p50 grpc-auto / infinity-fp32"] == (pytest.approx(0.4), True)
    assert goals["W2 / W1 throughput grpc-auto"] == (pytest.approx(100 / 90), True)
    value, passed = goals["W2 p99 / p50 grpc-auto"]
    assert value == pytest.approx(5.0 / 4.5, rel=0.02) and passed


def test_a_long_tail_misses_the_default_paths_bound() -> None:
    goals = by_goal([cell("grpc-auto", "W2", 100.0, [1.0] * 90 + [2.0] * 10)])
    assert goals["W2 p99 / p50 grpc-auto"] == (pytest.approx(2.0), False)  # bound 1.5 for the default path
    assert by_goal([cell("grpc-int8", "W2", 100.0, [1.0] * 90 + [2.0] * 10)])["W2 p99 / p50 grpc-int8"][1]


def test_per_request_ratio_spread_pairs_requests_of_the_same_repetition() -> None:
    from bench.report import spreads

    ours = cell("grpc-auto", "W1", 60.0, [1.0, 0.5, 2.0])
    theirs = cell("st-fp32", "W1", 20.0, [3.0, 2.0, 4.0])
    (median, low, high, n), *_ = spreads([ours, theirs]).values()
    assert (median, low, high, n) == (3.0, 2.0, 4.0, 3)
    # W2's requests overlap (8 clients): no per-request pairing.
    assert spreads([cell("grpc-auto", "W2", 1.0, [1.0]), cell("st-fp32", "W2", 1.0, [1.0])]) == {}
