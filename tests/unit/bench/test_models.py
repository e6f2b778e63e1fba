"""Which variants the bench converts its gated models with."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="bench.models reads rerank.converters.variants: the [convert] extra")

import onnxruntime

from bench import models


def test_a_machine_without_cuda_gates_no_cuda_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 is CUDA's: gating it on the CPU scores ~300 pairs at fp16-on-CPU speed (tens of
    minutes at the 0.6B shape) for a variant nothing here serves."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert "fp16" not in models.gated_variants()
    assert {"ov-fp32", "ov-bf16", "ov-bf16-split", "ov-bf16-mixed", "int8"} <= set(models.gated_variants())


def test_a_machine_with_cuda_gates_every_default_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert models.gated_variants() == models.DEFAULT_VARIANTS


def _cached_folder(tmp_path, monkeypatch: pytest.MonkeyPatch, name: str, config: dict) -> list[tuple]:
    """A cached checkpoint and model folder with ``config`` as its rerank.json; returns the list
    that records each conversion ``ensure`` starts: (name, variants)."""
    import json

    (tmp_path / name / "checkpoint").mkdir(parents=True)
    (tmp_path / name / "checkpoint" / "model.safetensors").touch()
    folder = tmp_path / name / "models" / name
    folder.mkdir(parents=True)
    (folder / "rerank.json").write_text(json.dumps(config))
    converted: list[tuple] = []
    monkeypatch.setattr(models, "CACHE", tmp_path)
    monkeypatch.setattr(models, "_convert_ours", lambda name, _c, _m, variants, _g: converted.append((name, variants)))
    monkeypatch.setattr(models, "_count_params", lambda _: (0, 0))
    return converted


@pytest.mark.parametrize(
    ("graph", "fresh", "reconverted"),
    [({}, True, True), ({"shared_prefix": 1}, True, False), ({}, False, False)],
)
def test_a_decoder_folder_without_the_shared_prefix_graph_is_converted_again(
    graph: dict[str, int], fresh: bool, reconverted: bool, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "qwen3-tiny"
    gates = {v: {"passed": False, "skipped": "no"} for v in models.gated_variants()}
    config = {"graph": graph, "verification": {"variant_gates": gates}}
    converted = _cached_folder(tmp_path, monkeypatch, name, config)
    models.ensure(name, log=lambda _: None, gguf=False, fresh=fresh)
    assert [n for n, _ in converted] == ([name] if reconverted else [])


def test_a_tool_that_builds_its_own_graphs_keeps_a_folder_without_the_default_variants(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder converted with --variants ov-fp32 has the tokenizer and template such a tool reads:
    # converting it again with every variant (an hour and a half at 0.6B's shape) is not asked for.
    name = "qwen3-tiny"
    config = {"graph": {"shared_prefix": 1}, "variants": {"ov-fp32": {}}, "verification": {"variant_gates": {}}}
    converted = _cached_folder(tmp_path, monkeypatch, name, config)
    models.ensure(name, log=lambda _: None, gguf=False, fresh=False)
    assert converted == []
    models.ensure(name, log=lambda _: None, gguf=False, fresh=False, variants=("int8",))
    assert converted == [(name, ("int8",))]  # named, and missing: converted


def test_narrowed_variants_convert_only_those_and_keep_a_folder_that_has_them(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "qwen3-tiny"
    gates = {"ov-fp32": {"passed": True}, "ov-bf16-split": {"passed": False}}
    config = {"graph": {"shared_prefix": 1}, "verification": {"variant_gates": gates}}
    converted = _cached_folder(tmp_path, monkeypatch, name, config)
    models.ensure(name, log=lambda _: None, gguf=False, variants=("ov-fp32", "ov-bf16-split"))
    assert converted == []  # the folder has them: kept
    models.ensure(name, log=lambda _: None, gguf=False, variants=("ov-fp32", "int8"))
    assert converted == [(name, ("ov-fp32", "int8"))]  # int8 is missing: only the asked ones converted
