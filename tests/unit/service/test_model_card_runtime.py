"""What a model folder says about its variants' runtimes, and what /v1/models shows of them
(no model files, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerank.service.backends.cpu_features import parse_cpuinfo
from rerank.service.model_folder import GATE_VERSION, ModelFolderConfig, read_model_folder
from rerank.service.router.rerank_service import cpu_info, variant_gate

FORMAT_2 = {
    "format": 2,
    "name": "m",
    "architecture": "bert",
    "max_length": 64,
    "template": {"prefix": [[101, 0]], "middle": [[102, 0]], "suffix": [[102, 1]]},
    "type_ids_input": True,
    "variants": {
        "fp32": {"file": "model.onnx", "precision": "fp32"},
        "int8": {"file": "model.int8.onnx", "precision": "int8", "device": "cpu", "gate": {"passed": True}},
    },
}


def write(folder: Path, data: dict) -> Path:
    folder.mkdir()
    (folder / "rerank.json").write_text(json.dumps(data))
    for name in ("tokenizer.json", "model.onnx", "model.int8.onnx", "model.ov.onnx"):
        (folder / name).write_text("{}")
    return folder


def test_a_format_2_folder_reads_as_onnx_runtime_variants(tmp_path: Path) -> None:
    config = read_model_folder(write(tmp_path / "m", FORMAT_2))
    assert {v.runtime for v in config.variants.values()} == {"onnxruntime"}
    # Its int8 passed the old 13-probe gate, not the per-query one: never chosen unasked.
    assert not config.variants["int8"].passed_gate and config.variants["fp32"].exact


def test_runtime_round_trips_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps(FORMAT_2))
    data["format"] = 3
    data["variants"]["ov-bf16"] = {
        "file": "model.ov.onnx",
        "precision": "bf16",
        "device": "cpu",
        "runtime": "openvino",
        "gate": {"version": GATE_VERSION, "passed": True},
    }
    config = read_model_folder(write(tmp_path / "a", data))
    assert config.variants["ov-bf16"].runtime == "openvino" and config.variants["ov-bf16"].passed_gate
    assert ModelFolderConfig.from_json(config.to_json()) == config
    data["variants"]["ov-bf16"]["runtime"] = "tensorrt"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        read_model_folder(write(tmp_path / "b", data))


FIGURES = {
    "version": GATE_VERSION,
    "passed": False,
    "pairs": 309,
    "queries": 10,
    "min_spearman": 0.9974,
    "all_top3_kept": False,
    "min_top10_agreement": 0.9,
    "max_abs_diff": 0.0955,
    "max_rel_diff": 0.0257,
    "thresholds": {"min_spearman": 0.99, "top_k_kept": 3, "max_abs_diff": 0.05},
}


def test_the_card_shows_the_current_gate_figures_only() -> None:
    gate = variant_gate(FIGURES)
    assert gate is not None
    assert (gate.passed, gate.pairs, gate.queries, gate.top3_kept) == (False, 309, 10, False)
    assert (gate.min_spearman, gate.min_top10_agreement, gate.max_abs_diff, gate.max_rel_diff) == (
        0.9974,
        0.9,
        0.0955,
        0.0257,
    )
    assert (gate.min_spearman_required, gate.max_abs_diff_allowed) == (0.99, 0.05)
    assert variant_gate({"spearman": 0.995, "same_top3": True, "passed": True}) is None  # format 2's gate
    assert variant_gate({}) is None  # the fp32 reference has none


def test_the_card_shows_the_cpu() -> None:
    info = cpu_info(parse_cpuinfo("model name : AMD EPYC\nflags : avx2 avx512f avx512_bf16 avx512_vnni\n"))
    assert info is not None
    assert info.model == "AMD EPYC" and list(info.features) == ["AVX-512 BF16", "AVX-512 VNNI", "AVX-512F", "AVX2"]
    assert (info.amx, info.native_bf16, info.native_int8) == (False, True, True)
    assert cpu_info(None) is None
