"""The bench's targets, ratios and ratio table against the other servers and libraries, on
made-up measurements (no servers)."""

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
    assert goals["W3 p50 grpc-auto / fastest server (infinity-fp32)"] == (pytest.approx(0.4), True)
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


def test_targets_against_the_openvino_library_and_every_server_the_fastest_setting_the_w3_bound() -> None:
    goals = by_goal(
        [
            cell("grpc-auto", "W1", 150.0, [0.4]),
            cell("st-ov", "W1", 120.0, [0.5]),
            cell("vllm", "W1", 40.0, [1.6]),
            cell("grpc-auto", "W2", 150.0, [3.4] * 8),
            cell("st-ov", "W2", 90.0, [5.7] * 8),
            cell("grpc-auto", "W3", 0, [0.012] * 5),
            cell("vllm", "W3", 0, [0.020] * 5),
            cell("infinity-fp32", "W3", 0, [0.040] * 5),
            cell("grpc-fp32", "W1", 70.0, [0.9]),
            cell("st-onnx", "W1", 50.0, [1.3]),
        ]
    )
    assert goals["W1 throughput grpc-auto / st-ov"] == (pytest.approx(1.25), False)  # needs 1.5x
    assert goals["W2 throughput grpc-auto / st-ov"] == (pytest.approx(150 / 90), True)
    assert goals["W1 throughput grpc-auto / vllm"] == (pytest.approx(3.75), True)
    # The fastest server (vllm at 20 ms) sets W3's bound, not the slowest.
    assert goals["W3 p50 grpc-auto / fastest server (vllm)"] == (pytest.approx(0.6), False)
    assert goals["W1 throughput grpc-fp32 / st-onnx (AVX2-only CPUs)"] == (pytest.approx(1.4), True)


def test_the_default_path_must_pass_the_gate_on_the_probes() -> None:
    from bench.report import targets

    accuracy = {"minilm-ce": {"grpc-auto": {"gate": False}}}
    (check,) = [t for t in targets([cell("grpc-auto", "W1", 1.0, [1.0])], accuracy) if "gate" in t.goal]
    assert not check.passed


def test_ratio_table_gives_each_peer_our_front_doors_ratios_and_its_accuracy() -> None:
    from bench.report import COMPARISON_COLUMNS, comparison

    measurements = [
        cell("grpc-auto", "W1", 120.0, [0.5]),
        cell("rest-auto", "W1", 100.0, [0.6]),
        cell("st-ov", "W1", 40.0, [1.6]),
        cell("grpc-auto", "W3", 0, [0.010] * 3),
        cell("rest-auto", "W3", 0, [0.012] * 3),
        cell("st-ov", "W3", 0, [0.020] * 3),
    ]
    accuracy = {
        "minilm-ce": {
            "st-ov": {"min_spearman": 0.95, "top3_kept": 8, "queries": 10, "max_abs_diff": 0.096, "gate": False}
        }
    }
    rows = {row[1]: dict(zip(COMPARISON_COLUMNS, row, strict=True)) for row in comparison(measurements, accuracy)}
    assert list(rows) == ["grpc-auto", "rest-auto", "st-ov"]
    st = rows["st-ov"]
    assert (st["W1 pairs/s"], st["W1 ours/peer"]) == ("40", "3.00x / 2.50x")
    assert (st["W3 p50 ms"], st["W3 p50 ours/peer"]) == ("20.0", "0.50x / 0.60x")
    assert (st["W2 pairs/s"], st["W2 ours/peer"]) == ("", "")
    accuracy_cells = (st["min Spearman"], st["top-3 kept"], st["max |Δ logit|"], st["gate"])
    assert accuracy_cells == ("0.9500", "8/10", "0.096", "FAIL")
    # Our own rows carry no ratio against themselves, and no accuracy where none was probed.
    assert rows["grpc-auto"]["W1 ours/peer"] == "" and rows["grpc-auto"]["gate"] == ""
