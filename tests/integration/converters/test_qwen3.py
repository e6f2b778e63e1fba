"""Qwen3-Reranker: the converted model folder scores pairs as the model card's code does, from
the checkpoint folder and from GGUFs made by llama.cpp's own converter.

The reference is :class:`tests.qwen3_reference.ModelCard`: transformers' AutoModelForCausalLM
and AutoTokenizer on the model card's prompt and formula, each pair alone. Our side is the
serving path (the model folder's pair encoder, right padding, the backend)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from rerank.converters.testing.llama_cpp import convert_to_gguf
from rerank.service.core.tokenization import PairEncoder
from rerank.service.model_folder import read_model_folder
from rerank.service.scoring import pair_ids, score_pairs
from tests.qwen3_reference import ModelCard, model_card, tricky_pairs
from tests.support.conversions import convert_with_cli

TOLERANCE = 1e-4
INSTRUCTION = "Given a question about animals, find the passage that answers it"
LONG_DOCUMENT = "The giant panda lives in the mountains of central China and eats bamboo. " * 80


def suffix_ids(card: ModelCard) -> list[int]:
    return list(card.suffix_tokens)


@pytest.fixture(scope="module")
def card(qwen3_checkpoint) -> ModelCard:
    return model_card(str(qwen3_checkpoint()))


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_token_ids_are_the_model_cards(qwen3_folder, card, instruction):
    config = read_model_folder(qwen3_folder)
    pairs = tricky_pairs()
    ours = pair_ids(qwen3_folder, config, pairs, instruction=instruction)
    theirs = card.ids(pairs, instruction)
    for pair, a, b in zip(pairs, ours, theirs, strict=True):
        assert a == b, pair


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_scores_are_the_model_cards(qwen3_folder, card, instruction):
    config = read_model_folder(qwen3_folder)
    pairs = tricky_pairs()
    ours = score_pairs(qwen3_folder, config, pairs, instruction=instruction)
    theirs = card.logits(pairs, instruction)
    diff = float(np.max(np.abs(ours - theirs)))
    print(f"qwen3 tiny, instruction {instruction!r}: max |Δ logit| vs the model card {diff:.2e}")
    assert diff <= TOLERANCE
    assert np.ptp(theirs) > 1.0  # the fixture's scores differ clearly between pairs
    if instruction is not None:  # and the instruction moves them
        assert np.max(np.abs(theirs - card.logits(pairs))) > 100 * TOLERANCE


def test_the_folder_declares_the_prompt(qwen3_folder, card):
    data = json.loads((qwen3_folder / "rerank.json").read_text())
    assert data["architecture"] == "qwen3" and data["format"] == 4
    template = data["template"]
    assert [i for i, _ in template["prefix"]] == card.prefix_tokens and template["middle"] == []
    assert [i for i, _ in template["suffix"]] == suffix_ids(card)
    assert (
        template["prompt"]["default_instruction"]
        == "Given a web search query, retrieve relevant passages that answer the query"
    )
    assert data["spec"]["yes_id"] == card.token_true_id and data["spec"]["no_id"] == card.token_false_id
    assert data["verification"]["max_abs_diff"] <= TOLERANCE
    assert data["verification"]["reference"].endswith("(AutoModelForCausalLM)")
    assert data["graph"]["shared_prefix"] == 1  # and the graph reads the head apart:
    assert "prefix_ids" in {i.name for i in onnx.load(str(qwen3_folder / "model.onnx")).graph.input}


def test_variants_are_gated_as_for_the_encoders(qwen3_folder, card):
    """fp32-fused does not apply (no MultiHeadAttention for causal grouped-query attention); the
    others are built from model.onnx and gated; ov-fp32 runs the same graph on OpenVINO."""
    from rerank.converters.variants import DEFAULT, NO_FUSED_GRAPH

    data = json.loads((qwen3_folder / "rerank.json").read_text())
    gates = data["verification"]["variant_gates"]
    assert set(gates) == set(DEFAULT) and gates["fp32-fused"] == {"passed": False, "skipped": NO_FUSED_GRAPH}
    for name in ("int8", "fp16", "ov-fp32", "ov-bf16", "ov-int8-dynamic"):
        figures = gates[name]
        if "skipped" not in figures:  # the CPU may lack bf16 units: then it says so
            assert figures["pairs"] >= 300 and figures["passed"] == (name in data["variants"])
    assert not any(v["fused"] for v in data["variants"].values())
    config = read_model_folder(qwen3_folder)
    pairs = tricky_pairs()[:6]
    ours = score_pairs(qwen3_folder, config, pairs, variant=config.variants["ov-fp32"])
    assert float(np.max(np.abs(ours - card.logits(pairs)))) <= TOLERANCE


def test_openvino_runs_each_attention_as_one_kernel(qwen3_folder):
    """The graph's attention is in the form OpenVINO fuses (one kernel from the scores to the
    context, run in tiles): a Softmax of its own would mean every layer's [heads, query, key]
    scores held whole, memory that grows with the square of a pair's length (6.3 GB for one
    4,000-token pair at 0.6B's shape; docs/performance.md, "Long pairs")."""
    ov = pytest.importorskip("openvino")
    graph = onnx.load(str(qwen3_folder / "model.onnx"))
    softmaxes = sum(1 for node in graph.graph.node if node.op_type == "Softmax")
    assert softmaxes >= 3  # the heads' and the rows' attention, and the last layer's
    compiled = ov.Core().compile_model(str(qwen3_folder / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kinds = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    # Only the last layer's runs apart: one query a row, so its scores are one row a head.
    assert kinds.count("Softmax") == 1
    assert kinds.count("Subgraph") >= softmaxes - 1


def test_a_truncated_pair_keeps_the_suffix_and_scores_as_the_card(qwen3_folder, card):
    config = read_model_folder(qwen3_folder)
    encoder = PairEncoder(qwen3_folder / "tokenizer.json", config.template, config.max_length)
    encoded = encoder.encode("what do pandas eat?", [LONG_DOCUMENT])
    ids = encoded.pairs[0].ids.tolist()
    assert len(ids) == config.max_length and ids[-len(card.suffix_tokens) :] == suffix_ids(card)
    total = len(encoder.tokenizer.encode(" " + LONG_DOCUMENT, add_special_tokens=False).ids)
    query_part = encoder.tokenizer.encode(encoder.query_text("what do pandas eat?"), add_special_tokens=False)
    kept = encoder.room_for_document(len(query_part.ids))
    assert encoded.truncated_tokens == [total - kept] and total > kept
    (theirs,) = card.ids([("what do pandas eat?", LONG_DOCUMENT)])
    assert ids == theirs  # the card cuts the same document tokens
    ours = score_pairs(qwen3_folder, config, [("what do pandas eat?", LONG_DOCUMENT)])
    assert abs(float(ours[0]) - card.logit_of(theirs)) <= TOLERANCE


def test_windows_each_keep_the_template_and_score_as_the_card(qwen3_folder, card):
    from rerank.service.backends.base import pad
    from rerank.service.backends.onnx import OnnxBackend

    config = read_model_folder(qwen3_folder)
    encoder = PairEncoder(qwen3_folder / "tokenizer.json", config.template, config.max_length)
    encoded = encoder.encode("what do pandas eat?", [LONG_DOCUMENT], "window")
    assert encoded.windows[0] == len(encoded.pairs) >= 2
    backend = OnnxBackend(qwen3_folder, config, variant="fp32", device="cpu")
    ours = backend.run(pad(encoded.pairs, config.template.pad_id, False))
    for pair, score in zip(encoded.pairs, ours, strict=True):
        ids = pair.ids.tolist()
        assert ids[: len(card.prefix_tokens)] == card.prefix_tokens and ids[-len(card.suffix_tokens) :] == suffix_ids(
            card
        )
        assert abs(float(score) - card.logit_of(ids)) <= TOLERANCE


def test_the_shared_prefix_form_scores_as_the_card(qwen3_checkpoint, qwen3_folder, card):
    """Two requests in one micro-batch, their heads of different lengths (the shorter one
    padded), each read once; rows of several lengths after them."""
    import onnxruntime as ort

    from rerank.converters.hf_checkpoint import load_checkpoint
    from rerank.converters.qwen3.graph import build_graph
    from rerank.service.backends.base import pad
    from rerank.service.core.tokenization import Pair

    config = read_model_folder(qwen3_folder)
    encoder = PairEncoder(qwen3_folder / "tokenizer.json", config.template, config.max_length)
    requests = [
        ("what do pandas eat?", [d for _, d in tricky_pairs()[:5]], None),
        ("where do giant pandas live in the wild today?", [d for _, d in tricky_pairs()[5:9]], INSTRUCTION),
    ]
    heads, rows, row_of, expected = [], [], [], []
    for r, (query, documents, instruction) in enumerate(requests):
        pairs = encoder.encode(query, documents, instruction=instruction).pairs
        head = len(config.template.prefix) + len(encoder.tokenizer.encode(encoder.query_text(query, instruction)).ids)
        assert all(p.ids[:head].tolist() == pairs[0].ids[:head].tolist() for p in pairs)
        heads.append(Pair(r, pairs[0].ids[:head], pairs[0].type_ids[:head]))
        rows += [Pair(r, p.ids[head:], p.type_ids[head:]) for p in pairs]
        row_of += [r] * len(pairs)
        expected += [card.logit_of(p.ids.tolist()) for p in pairs]
    assert len(heads[0].ids) != len(heads[1].ids)
    loaded = load_checkpoint(str(qwen3_checkpoint()))
    graph = build_graph(loaded.spec, loaded.weights, shared_prefix=True)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    head_batch, row_batch = pad(heads, config.template.pad_id, False), pad(rows, config.template.pad_id, False)
    feed = {
        "prefix_ids": head_batch.input_ids,
        "prefix_mask": head_batch.attention_mask,
        "prefix_row": np.array(row_of, dtype=np.int64),
        "input_ids": row_batch.input_ids,
        "attention_mask": row_batch.attention_mask,
    }
    (ours,) = session.run(None, feed)
    assert float(np.max(np.abs(ours - np.array(expected)))) <= TOLERANCE
    assert np.ptp(expected) > 1.0


def test_the_split_recipe_cuts_the_shared_prefix_form_at_its_rows(qwen3_checkpoint, qwen3_folder, card):
    """ov-bf16-split's cut on the served graph: one layer output (the rows', not the heads'),
    and the two parts, both compiled at f32 here, score as the card."""
    import openvino as ov

    from rerank.converters.hf_checkpoint import load_checkpoint
    from rerank.converters.mixed_precision import SPLIT_RECIPES, to_mixed_bf16
    from rerank.converters.qwen3.graph import build_graph
    from rerank.service.backends.base import graph_feed, pad
    from rerank.service.backends.openvino import split_at
    from rerank.service.model_folder import BF16_UNTIL

    loaded = load_checkpoint(str(qwen3_checkpoint()))
    graph = build_graph(loaded.spec, loaded.weights, shared_prefix=True)
    assert to_mixed_bf16(graph, SPLIT_RECIPES[0]) > 0
    core = ov.Core()
    parts = [
        core.compile_model(part, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        for part in split_at(core.read_model(graph.SerializeToString(), b""), BF16_UNTIL)
    ]
    config = read_model_folder(qwen3_folder)
    encoder = PairEncoder(qwen3_folder / "tokenizer.json", config.template, config.max_length)
    pairs = encoder.encode("what do pandas eat?", [d for _, d in tricky_pairs()[:6]]).pairs
    values = graph_feed(pad(pairs, config.template.pad_id, False), [p.get_any_name() for p in parts[0].inputs])
    for part in parts:
        result = part({p.get_any_name(): values[p.get_any_name()] for p in part.inputs})
        values.update({p.get_any_name(): result[p] for p in part.outputs})
    ours = np.asarray(result[parts[-1].output(0)], dtype=np.float64)
    theirs = np.array([card.logit_of(p.ids.tolist()) for p in pairs])
    assert float(np.max(np.abs(ours - theirs))) <= TOLERANCE
    assert onnx.checker.check_model(graph) is None


@pytest.fixture(scope="module")
def ggufs(qwen3_checkpoint, tmp_path_factory):
    """outtype -> GGUF of the tiny fixture, made by llama.cpp's convert_hf_to_gguf.py."""
    out = tmp_path_factory.mktemp("qwen3-gguf")
    return {
        t: convert_to_gguf(qwen3_checkpoint(), out / f"qwen3-reranker-tiny-{t}.gguf", t) for t in ("f32", "f16", "q8_0")
    }


# Measured on the tiny fixture (random weights of std 0.3, logits spread over ~10): f32 and f16 0
# (the fixture's bf16 weights are exact in f16: same weights, same graph), q8_0 0.155.
GGUF_TOLERANCE = {"f32": TOLERANCE, "f16": TOLERANCE, "q8_0": 0.5}


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_gguf_scores_like_the_checkpoint(outtype, ggufs, qwen3_folder, card, tmp_path):
    folder = convert_with_cli(ggufs[outtype], tmp_path, f"qwen3-{outtype}", "--variants", "none")
    data = json.loads((folder / "rerank.json").read_text())
    assert data["source"]["format"] == "gguf" and data["source"]["dtype"] == outtype and data["notes"] == []
    config = read_model_folder(folder)
    pairs = tricky_pairs()
    assert pair_ids(folder, config, pairs) == card.ids(pairs)  # the tokenizer rebuilt from the file
    ours = score_pairs(folder, config, pairs)
    hf = score_pairs(qwen3_folder, read_model_folder(qwen3_folder), pairs)
    diff = float(np.max(np.abs(ours - hf)))
    print(f"qwen3 tiny GGUF {outtype}: max |Δ logit| vs the checkpoint's folder {diff:.2e}")
    assert diff <= GGUF_TOLERANCE[outtype]


def test_an_untied_head_converts_from_the_checkpoint_and_its_gguf(qwen3_checkpoint, tmp_path):
    """The 8B layout: a separate lm_head.weight (llama.cpp keeps only its yes/no rows)."""
    checkpoint = qwen3_checkpoint(tied=False)
    card = model_card(str(checkpoint))
    pairs = tricky_pairs()[:6]
    hf = convert_with_cli(checkpoint, tmp_path, "untied", "--variants", "none")
    gguf = convert_with_cli(
        convert_to_gguf(checkpoint, tmp_path / "untied.gguf", "f32"), tmp_path, "untied-gguf", "--variants", "none"
    )
    for folder in (hf, gguf):
        ours = score_pairs(folder, read_model_folder(folder), pairs)
        assert float(np.max(np.abs(ours - card.logits(pairs)))) <= TOLERANCE


def test_a_gguf_converted_as_a_plain_llm_reads_the_lm_head(qwen3_checkpoint, tmp_path):
    """Without the reranker hints (README, name) llama.cpp writes a plain Qwen3 LLM: no
    cls.output. The yes/no rows then come from the (tied) embeddings, with a note."""
    plain = tmp_path / "plain-llm"
    shutil.copytree(qwen3_checkpoint(), plain)
    (plain / "README.md").unlink()
    folder = convert_with_cli(
        convert_to_gguf(plain, tmp_path / "plain.gguf", "f32"), tmp_path, "plain", "--variants", "none"
    )
    data = json.loads((folder / "rerank.json").read_text())
    assert len(data["notes"]) == 1 and "no reranker head (cls.output)" in data["notes"][0]
    card = model_card(str(qwen3_checkpoint()))
    pairs = tricky_pairs()[:6]
    assert (
        float(np.max(np.abs(score_pairs(folder, read_model_folder(folder), pairs) - card.logits(pairs)))) <= TOLERANCE
    )
