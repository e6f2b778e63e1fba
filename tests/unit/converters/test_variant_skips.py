"""Variants the converter cannot gate on this machine are skipped with a reason, never written
with figures that are not theirs (no model: the scorer must not even be called)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("onnx", reason="needs the [convert] extra")

from rerank.converters import variants
from rerank.service import scoring


def never_scored(_variant: object) -> np.ndarray:
    raise AssertionError("a skipped variant was scored")


@pytest.mark.parametrize(
    ("installed", "native", "reason"),
    [
        (False, True, "OpenVINO is not installed"),
        (True, False, "this CPU has no bf16 units"),
    ],
)
def test_an_openvino_variant_that_cannot_be_gated_here_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, installed: bool, native: bool, reason: str
) -> None:
    monkeypatch.setattr(scoring, "runtime_available", lambda runtime: installed or runtime == "onnxruntime")
    monkeypatch.setattr(scoring, "runs_natively", lambda variant: native)
    lines: list[str] = []
    kept, figures = variants.write_variants(
        tmp_path,
        None,
        ("ov-bf16",),
        never_scored,
        np.zeros(3),
        ["q"] * 3,
        progress=lines.append,  # type: ignore[arg-type]
    )
    assert kept == {}
    assert figures["ov-bf16"]["passed"] is False and reason in figures["ov-bf16"]["skipped"]
    assert any("ov-bf16: skipped" in line and reason in line for line in lines)


def test_an_int8_variant_needs_the_cpus_int8_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "runtime_available", lambda runtime: True)
    monkeypatch.setattr(scoring, "runs_natively", lambda variant: variant.precision != "int8")
    assert variants.missing_runtime("ov-fp32") is None
    assert "no int8 units" in (variants.missing_runtime("ov-int8") or "")
    assert "no int8 units" in (variants.missing_runtime("ov-int8-dynamic") or "")


def split_variant(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    norms: bool,
    scores: Callable[[object], np.ndarray],
    name: str = "ov-bf16-split",
) -> tuple[dict[str, Any], list[str]]:
    """Variant ``name``'s figures and the progress lines, for a ``model.onnx`` of two layers of
    one weight product each, followed by an ``l<i>_ffn_ln_`` LayerNorm when ``norms``; the
    reference is six pairs of two queries."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.setattr(scoring, "runtime_available", lambda runtime: True)
    monkeypatch.setattr(scoring, "runs_natively", lambda variant: True)
    weights = [numpy_helper.from_array(np.eye(4, dtype=np.float32), f"w{i}") for i in range(2)]
    weights.append(numpy_helper.from_array(np.ones(4, dtype=np.float32), "gamma"))
    nodes = []
    for i, (x, y) in enumerate([("x", "h"), ("h", "y")]):
        product = f"{y}_up" if norms else y
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [product], name=f"l{i}_up_{2 * i}"))
        if norms:
            nodes.append(
                helper.make_node("LayerNormalization", [product, "gamma"], [y], name=f"l{i}_ffn_ln_{2 * i + 1}")
            )
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in "xy"]
    onnx.save_model(helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], weights)), folder / "model.onnx")
    lines: list[str] = []
    reference, groups = np.array([0.0, 0.5, 1.0, 0.0, 0.5, 1.0]), ["q"] * 3 + ["r"] * 3
    kept, figures = variants.write_variants(
        folder,
        None,
        (name,),
        scores,
        reference,
        groups,
        progress=lines.append,  # type: ignore[arg-type]
    )
    assert kept == {} and not (folder / variants.FILES[name]).exists()
    return figures[name], lines


def test_a_split_variant_of_a_graph_without_our_builders_layer_outputs_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Layers that end in neither an l<i>_ffn_ln_ LayerNorm nor an l<i>_out_ residual sum have no cut point.
    split, lines = split_variant(monkeypatch, tmp_path, norms=False, scores=never_scored)
    assert split["passed"] is False and "no single output of layer 0" in split["skipped"]
    assert any(line.startswith("variants: ov-bf16-split: skipped") for line in lines)


def test_the_split_ladder_ends_where_a_recipe_spares_every_layer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two post-LayerNorm layers: "the last layer" applies (and fails its gate here), "the last
    # two layers" leaves nothing before the cut, so the ladder ends with the first's figures.
    reversed_ranks = np.array([1.0, 0.5, 0.0, 1.0, 0.5, 0.0])
    split, lines = split_variant(monkeypatch, tmp_path, norms=True, scores=lambda variant: reversed_ranks)
    assert not split["passed"] and "skipped" not in split
    assert list(split["recipes_tried"]) == ["bf16 but the last layer"]
    assert any("bf16 but the last two layers: not tried, a split recipe needs at least one layer" in x for x in lines)


def test_the_cast_ladder_ends_where_a_recipe_leaves_nothing_in_bf16(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two layers of one feed-forward product: "feed-forward, all but the last two layers" puts no
    # product in bf16 (an fp32 graph): not gated, so it cannot pass as a "bf16-mixed" variant.
    reversed_ranks = np.array([1.0, 0.5, 0.0, 1.0, 0.5, 0.0])
    mixed, lines = split_variant(
        monkeypatch, tmp_path, norms=False, scores=lambda variant: reversed_ranks, name="ov-bf16-mixed"
    )
    assert not mixed["passed"] and "feed-forward, all but the last two layers" not in mixed["recipes_tried"]
    assert any("all but the last two layers: not tried, it leaves no weight product in bf16" in x for x in lines)


def test_int8_weights_are_skipped_for_a_graph_without_our_layers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only our builders' layer products are known weights: a graph without them (its token
    table alone could be stored in int8) gets no ov-int8-dynamic, and says why."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.setattr(scoring, "runtime_available", lambda runtime: True)
    monkeypatch.setattr(scoring, "runs_natively", lambda variant: True)
    table = numpy_helper.from_array(np.ones((5, 4), np.float32), "table")
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["x"], name="embed_1", axis=0),
        helper.make_node("MatMul", ["x", "w"], ["logits"], name="product_2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4])],
        [table, weight],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    lines: list[str] = []
    kept, figures = variants.write_variants(
        tmp_path,
        None,  # type: ignore[arg-type]
        ("ov-int8-dynamic",),
        never_scored,
        np.zeros(3),
        ["q"] * 3,
        progress=lines.append,  # type: ignore[arg-type]
    )
    assert kept == {} and "no layer weight products" in figures["ov-int8-dynamic"]["skipped"]
    assert not (tmp_path / variants.FILES["ov-int8-dynamic"]).exists()
    assert any("ov-int8-dynamic: skipped" in line for line in lines)
