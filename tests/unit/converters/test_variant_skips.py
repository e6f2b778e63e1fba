"""Variants the converter cannot gate on this machine are skipped with a reason, never written
with figures that are not theirs (no model: the scorer must not even be called)."""

from __future__ import annotations

from pathlib import Path

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
