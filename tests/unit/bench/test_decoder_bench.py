"""The bench's decoder-model (Qwen3-Reranker) parts that need no model: vLLM's chat template,
the repetition budget, the probe subset, the peers a decoder gets and its targets."""

from __future__ import annotations

from pathlib import Path

import pytest

# bench.measure imports bench.models, which reads rerank.converters.variants: the [convert] extra.
pytest.importorskip("onnx", reason="needs the [convert] extra")

from bench import accuracy, peers, run
from bench.measure import Measurement
from bench.report import targets
from bench.vllm import qwen3_chat_template
from rerank.converters.qwen3.prompt import PREFIX, SUFFIX, middle


def test_vllms_chat_template_renders_the_model_cards_prompt() -> None:
    """Rendered as vLLM renders chat templates (transformers' sandboxed Jinja environment, with
    its trim_blocks and lstrip_blocks, which drops a template's last newline): the card's exact
    prompt, its ``\n\n`` end included."""
    sandbox = pytest.importorskip("jinja2.sandbox")

    query, document = "what is a {panda}?", "The giant panda is a bear.\n"
    environment = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "query", "content": query}, {"role": "document", "content": document}]
    rendered = environment.from_string(qwen3_chat_template()).render(messages=messages)
    assert rendered == PREFIX + middle(query, document) + SUFFIX


@pytest.mark.parametrize(
    ("done", "planned", "seconds", "budget", "expected"),
    [
        (0, 3, 0.0, 1.0, True),  # the first always runs
        (1, 3, 500.0, 100.0, False),  # the first took the budget and more
        (1, 3, 40.0, 100.0, True),  # 40 + 40 <= 100
        (2, 3, 80.0, 100.0, False),  # 80 + 40 > 100
        (2, 3, 80.0, None, True),  # no budget: the plan decides
        (3, 3, 1.0, 100.0, False),  # the plan is done
    ],
)
def test_a_repetition_starts_only_if_it_should_end_within_the_budget(
    done: int, planned: int, seconds: float, budget: float | None, expected: bool
) -> None:
    assert run.another_repetition(done, planned, seconds, budget) is expected


def test_openvino_genais_query_and_document_join_into_the_model_cards_prompt(tmp_path: Path) -> None:
    """OpenVINO GenAI's rerank pipeline scores the text ``query + document`` of a Qwen3-Reranker
    and writes no template: the bench's two halves must make the card's whole prompt."""
    from bench.library_peers import OvGenai
    from bench.models import BenchModel

    (tmp_path / "config.json").write_text('{"max_position_embeddings": 40960}')
    model = BenchModel("qwen3-tiny", tmp_path, tmp_path, {}, 0, 0)
    peer = OvGenai("ov-genai", model, tmp_path)
    query, documents = "what is a {panda}?", ["The giant panda is a bear.\n", ""]
    pairs = peer.pairs(query, documents)
    assert [q + d for q, d in pairs] == [PREFIX + middle(query, d) + SUFFIX for d in documents]
    assert len({q for q, _ in pairs}) == 1  # one query text: the pipeline's one query per call
    assert peer.arguments[peer.arguments.index("--max-length") + 1] == "8192"  # the card's, not the positions'


def test_a_probe_subset_spreads_over_each_querys_documents() -> None:
    full = accuracy.probes()
    subset = accuracy.probes(8)
    assert [(g, q) for g, q, _ in subset] == [(g, q) for g, q, _ in full]
    for (_, _, documents), (_, _, chosen) in zip(full, subset, strict=True):
        assert len(chosen) == 8 and chosen[0] == documents[0]
        positions = [documents.index(d) for d in chosen]
        assert positions == sorted(positions) and positions[-1] >= len(documents) - len(documents) // 8 - 1
    assert accuracy.spread(["a", "b"], 8) == ["a", "b"]


def test_a_decoder_model_gets_its_own_peers() -> None:
    args = run.parse(["--models", "qwen3-tiny"])
    assert run.peers_for("qwen3-tiny", args) == list(peers.DECODER_DEFAULT)
    args = run.parse(["--models", "qwen3-tiny,minilm-ce", "--peers", "grpc-auto,st-fp32,hf-bf16,infinity-fp32"])
    assert run.peers_for("qwen3-tiny", args) == ["grpc-auto", "hf-bf16"]
    assert run.peers_for("minilm-ce", args) == ["grpc-auto", "st-fp32", "infinity-fp32"]


def cell(peer: str, workload: str, pairs_per_s: float, latencies: list[float]) -> Measurement:
    m = Measurement("qwen3-0.6b-shape", peer, "fp32", workload, latencies=latencies, seconds=10.0)
    m.pairs = int(pairs_per_s * m.seconds)
    return m


def test_a_decoder_is_held_to_twice_the_best_peer_and_half_llama_servers_latency() -> None:
    goals = {
        t.goal: (t.value, t.passed)
        for t in targets(
            [
                cell("grpc-auto", "W1", 9.0, [7.0]),
                cell("rest-auto", "W1", 30.0, [2.0]),  # ours: not a peer to beat
                cell("hf-bf16", "W1", 4.0, [16.0]),
                cell("llama-f16", "W1", 5.0, [12.8]),
                cell("vllm", "W1", 3.0, [20.0]),
                cell("grpc-auto", "W3", 0, [1.0] * 5),
                cell("llama-f16", "W3", 0, [2.5] * 5),
            ]
        )
    }
    assert goals["W1 throughput grpc-auto / best peer (llama-f16)"] == (pytest.approx(1.8), False)
    assert goals["W3 p50 grpc-auto / llama-f16"] == (pytest.approx(0.4), True)
    assert not any("vllm" in goal or "fastest server" in goal for goal in goals)  # the encoders' targets
    assert not any("passing the gate" in goal for goal in goals)  # no accuracy measured: no such line


def test_a_decoder_is_also_compared_with_the_best_peer_whose_scores_pass_the_gate() -> None:
    measured = [
        cell("grpc-auto", "W1", 9.0, [7.0]),
        cell("hf-fp32", "W1", 3.0, [21.0]),
        cell("hf-bf16", "W1", 12.0, [5.3]),
        cell("llama-f16", "W1", 4.0, [16.0]),
    ]
    gates = {"grpc-auto": True, "hf-fp32": True, "hf-bf16": False, "llama-f16": True}
    accuracy = {"qwen3-0.6b-shape": {peer: {"gate": ok} for peer, ok in gates.items()}}
    goals = {t.goal: (t.value, t.passed) for t in targets(measured, accuracy)}
    assert goals["W1 throughput grpc-auto / best peer (hf-bf16)"] == (pytest.approx(0.75), False)
    assert goals["W1 throughput grpc-auto / best peer passing the gate (llama-f16)"] == (pytest.approx(2.25), True)


def test_a_peer_that_did_not_start_has_a_row_saying_why() -> None:
    from bench.report import COMPARISON_COLUMNS, comparison

    error = (
        'vllm exited with status 1\n  File "arg_utils.py", line 1955\n'
        "pydantic_core.ValidationError: 1 validation error for ModelConfig\n    more context\n"
    )
    why = run.failure_line(error)
    assert why == "vllm exited with status 1 (pydantic_core.ValidationError: 1 validation error for ModelConfig)"
    assert run.failure_line("llama-q8_0 exited with signal 4 (SIGILL)\nload_model: loading") == (
        "llama-q8_0 exited with signal 4 (SIGILL)"
    )
    rows = comparison([cell("grpc-auto", "W3", 0, [1.0])], None, {"qwen3-0.6b-shape": {"llama-q8_0": why}})
    failed = dict(zip(COMPARISON_COLUMNS, rows[-1], strict=True))
    assert (failed["peer"], failed["precision"]) == ("llama-q8_0", f"not measured: {why}")


def test_the_plans_budget_gives_way_to_the_flags() -> None:
    assert run.plan_for("qwen3-0.6b-shape", run.parse(["--models", "qwen3-0.6b-shape"])).budget == 240.0
    assert run.plan_for("qwen3-0.6b-shape", run.parse(["--budget", "60"])).budget == 60.0
    assert run.plan_for("qwen3-0.6b-shape", run.parse(["--reps", "3"])).budget is None  # 3 asked, 3 run
    assert run.plan_for("minilm-ce", run.parse([])).budget is None


def test_the_probe_set_size_gives_way_to_the_flag() -> None:
    """The plan's 6 documents a query, or every probe pair (the gate's own set) when asked."""
    assert run.plan_for("qwen3-0.6b-shape", run.parse([])).probe_documents == 6
    assert run.plan_for("qwen3-0.6b-shape", run.parse(["--probe-documents", "all"])).probe_documents is None
    assert run.plan_for("qwen3-0.6b-shape", run.parse(["--probe-documents", "12"])).probe_documents == 12
    with pytest.raises(SystemExit):
        run.parse(["--probe-documents", "0"])


def test_vllm_fp32_asks_for_float32_and_vllm_for_its_default(tmp_path) -> None:
    from bench.vllm import command

    default = command(tmp_path, "m", 8000, 8192, tmp_path / "t.jinja")
    fp32 = command(tmp_path, "m", 8000, 8192, tmp_path / "t.jinja", "float32")
    assert "--dtype" not in default and fp32[-2:] == ["--dtype", "float32"]
    assert fp32[: len(default)] == default
    assert "vllm-fp32" in peers.DECODER_DEFAULT and "vllm-fp32" in peers.SERVER_PEERS
