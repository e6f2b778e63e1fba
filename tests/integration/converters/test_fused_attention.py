"""The fused graph's attention (ONNX Runtime's MultiHeadAttention) on the CPU: a micro-batch
without padding takes the kernel's tiled path, whose memory grows with a pair's length, not its
square; a padded one keeps the padding mask. Both give the standard graph's logits."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")
pytest.importorskip("transformers", reason="needs the [convert] extra")

import onnx
import onnxruntime as ort

from rerank.converters import families
from rerank.converters.hf_checkpoint import load_checkpoint
from rerank.converters.spec import EncoderSpec
from rerank.converters.testing.checkpoints import make_checkpoint

LONG = 4096
HEADS = 16
"""At this length and head count one [1, heads, S, S] fp32 score tensor is 1 GiB."""


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint("xlmr", tmp_path_factory.mktemp("xlmr") / "checkpoint", seed=5)


def _graphs(folder: Path, **spec_changes: int) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    loaded = load_checkpoint(str(folder))
    spec, weights = loaded.spec, dict(loaded.weights)
    assert isinstance(spec, EncoderSpec)
    if "max_length" in spec_changes:  # room in the learned position table for the longer pairs
        rows = spec_changes["max_length"] + spec.position_offset
        extra = np.random.default_rng(0).normal(0, 0.02, (rows - len(weights["emb.pos"]), spec.hidden))
        weights["emb.pos"] = np.concatenate([weights["emb.pos"], extra.astype(np.float32)])
    spec = dataclasses.replace(spec, **spec_changes)
    build = families.of(loaded).build_graph
    return build(spec, weights), build(spec, weights, fused_attention=True)


def _logits(model: onnx.ModelProto, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0], dtype=np.float64)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_the_fused_graph_scores_like_the_standard_one(xlmr: Path, padded: bool) -> None:
    standard, fused = _graphs(xlmr)
    rng = np.random.default_rng(1)
    ids = rng.integers(100, 2000, (3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    if padded:
        for row, length in enumerate([40, 17, 29]):
            mask[row, length:] = 0
            ids[row, length:] = 1
    np.testing.assert_allclose(_logits(fused, ids, mask), _logits(standard, ids, mask), atol=1e-5, rtol=0)


_PEAK = """
import json, sys
import numpy as np, onnxruntime as ort

def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024

options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
def run(length):
    ids = np.random.default_rng(2).integers(100, 2000, (1, length)).astype(np.int64)
    session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
run(64)
before = peak()
run(int(sys.argv[2]))
print(json.dumps({"added_mib": peak() - before}))
"""


def test_a_long_unpadded_pair_takes_memory_linear_in_its_length(xlmr: Path, tmp_path: Path) -> None:
    """Padded, or before the fused graph told the two apart, ONNX Runtime held the [1, 16, S, S]
    scores: over 1 GiB here (9 GB for one 8,192-token pair at bge-reranker-v2-m3's shape)."""
    _, fused = _graphs(xlmr, heads=HEADS, max_length=LONG)
    path = tmp_path / "fused.onnx"
    onnx.save(fused, str(path))
    # A fresh process: its high-water mark is this graph's alone.
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), str(LONG)], capture_output=True, text=True, timeout=300, check=True
    )
    added = json.loads(out.stdout.strip().splitlines()[-1])["added_mib"]
    assert added < 256, f"one {LONG}-token pair added {added} MiB"
