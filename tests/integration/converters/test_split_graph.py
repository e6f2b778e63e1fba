"""The split bf16 graph on a real (tiny, seeded) BERT cross-encoder: the last layer computing
only the first token's row still gives transformers' logits, and the graph split at
:data:`~rerank.service.model_folder.BF16_UNTIL` is the unsplit fp32 graph when both parts
run in f32, with only the spared layers and the head after the cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")
pytest.importorskip("transformers", reason="needs the [convert] extra")

import onnx

from rerank.converters import families
from rerank.converters.hf_checkpoint import load_checkpoint
from rerank.converters.mixed_precision import SPLIT_RECIPES, to_mixed_bf16, weight_products
from rerank.converters.spec import EncoderSpec
from rerank.converters.testing.checkpoints import make_checkpoint
from rerank.service.model_folder import BF16_UNTIL


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint("bert", tmp_path_factory.mktemp("bert") / "checkpoint", seed=3)


def batch(spec: EncoderSpec) -> dict[str, np.ndarray]:
    """Three pairs of different lengths, right padded; ids drawn from the vocabulary's middle."""
    rng = np.random.default_rng(0)
    lengths = [23, 9, 16]
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(100, 2000, length)
        mask[row, :length] = 1
    types = np.zeros_like(ids)
    types[:, 5:] = mask[:, 5:]
    return {"input_ids": ids, "attention_mask": mask} | ({"token_type_ids": types} if spec.type_ids_input else {})


def graph(folder: Path, fused: bool = False) -> tuple[onnx.ModelProto, EncoderSpec]:
    loaded = load_checkpoint(str(folder))
    assert isinstance(loaded.spec, EncoderSpec)
    model = families.of(loaded).build_graph(loaded.spec, loaded.weights, fused_attention=fused)
    return model, loaded.spec


def onnxruntime_logits(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], feed)[0], dtype=np.float64)


@pytest.mark.parametrize("fused", [False, True], ids=["standard", "fused"])
def test_a_first_row_last_layer_gives_transformers_logits(bert: Path, fused: bool) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model, spec = graph(bert, fused)
    feed = batch(spec)
    reference = AutoModelForSequenceClassification.from_pretrained(str(bert)).eval()
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits[:, 0].double().numpy()
    assert np.abs(onnxruntime_logits(model, feed) - expected).max() < 1e-4
    # The last layer computes one query row per pair; the others every token's.
    last = spec.num_layers - 1
    assert {kind for _, layer, kind in weight_products(model) if layer == last} == {"qkv", "o", "up", "down"}
    assert any(n.name.startswith(f"l{last}_kv_") for n in model.graph.node)
    assert not any(n.name.startswith(f"l{last - 1}_kv_") for n in model.graph.node)


def test_the_split_graph_at_f32_is_the_unsplit_graph(bert: Path) -> None:
    ov = pytest.importorskip("openvino")
    from rerank.service.backends.openvino import split_at

    unsplit, spec = graph(bert)
    feed = batch(spec)
    expected = onnxruntime_logits(unsplit, feed)
    recipe = SPLIT_RECIPES[0]
    split = onnx.ModelProto()
    split.CopyFrom(unsplit)
    to_mixed_bf16(split, recipe)
    core = ov.Core()
    head, tail = split_at(core.read_model(split.SerializeToString(), b""), BF16_UNTIL)
    # The spared layers' weight products run after the cut, every other layer's before it.
    first_spared = spec.num_layers - recipe.spare_last
    weights = {node.input[1]: layer >= first_spared for node, layer, _ in weight_products(unsplit)}

    def constants(part: object) -> set[str]:
        return {op.get_friendly_name() for op in part.get_ordered_ops() if op.get_type_name() == "Constant"}  # type: ignore[attr-defined]

    assert {w for w, spared in weights.items() if spared} == constants(tail) & set(weights)
    assert {w for w, spared in weights.items() if not spared} == constants(head) & set(weights)
    values = dict(feed)
    for part in (head, tail):
        compiled = core.compile_model(part, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled({port.get_any_name(): values[port.get_any_name()] for port in compiled.inputs})
        values.update({port.get_any_name(): result[port] for port in compiled.outputs})
    assert np.abs(np.asarray(values["logits"], dtype=np.float64) - expected).max() < 1e-5
