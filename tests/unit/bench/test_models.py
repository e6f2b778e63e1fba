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
