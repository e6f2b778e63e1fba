"""llama.cpp's llama-server as a second, looser oracle (``make test-parity``).

llama-server runs the same GGUF files with its own kernels (a GELU table, half-precision paths),
so agreement is looser than with transformers; it confirms rankings and the semantics of files
without a pooler. Needs llama-server built by tools/build_llama_cpp.sh.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rerank.converters.testing.llama_cpp import convert_to_gguf, llama_rerank, llama_server_binary, record_parity
from rerank.converters.variants import spearman
from tests.reference import reference_scores
from tests.support import REPO
from tests.support.conversions import convert_with_cli, onnx_scores

pytestmark = pytest.mark.parity

QUERY = "what do giant pandas eat"
DOCS = [
    "the giant panda eats bamboo shoots and leaves",
    "a red car drove past",
    "熊猫吃竹子",
    "pandas",
    "bamboo forests in Sichuan",
    "stock markets fell on Tuesday",
    "Большая панда питается бамбуком",
    "the quick brown fox",
]
RESULTS = REPO / "build" / "parity.json"


@pytest.fixture(scope="module")
def server_binary() -> Path:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("llama-server not built: run tools/build_llama_cpp.sh (make test-parity does)")
    return binary


def llama_scores(binary: Path, gguf: Path) -> np.ndarray:
    return llama_rerank(binary, gguf, QUERY, DOCS)


def record(name: str, **figures: float) -> None:
    record_parity(RESULTS, name, **figures)


@pytest.mark.parametrize("kind", ["xlmr", "jina-v2", "jina-v1"])
def test_llama_server_agrees_with_our_gguf_conversion(kind, server_binary, checkpoint, tmp_path):
    gguf = convert_to_gguf(checkpoint(kind), tmp_path / f"{kind}.gguf", "f32")
    ours = onnx_scores(convert_with_cli(gguf, tmp_path, kind), [(QUERY, d) for d in DOCS])
    theirs = llama_scores(server_binary, gguf)
    diff, rho = float(np.max(np.abs(ours - theirs))), spearman(ours, theirs)
    record(kind, max_abs_diff=diff, spearman=rho)
    print(f"{kind}: llama-server vs ours max |Δ| {diff:.3e}, Spearman {rho:.4f}")
    assert rho >= 0.95
    assert diff <= 0.05


def test_llama_server_feeds_type_zero_to_bert(server_binary, checkpoint, tmp_path):
    """llama.cpp scores a BERT GGUF with token type 0 everywhere and no pooler: check that claim
    against transformers' BertModel fed exactly that."""
    ckpt = checkpoint("bert")
    gguf = convert_to_gguf(ckpt, tmp_path / "bert.gguf", "f32")
    theirs = llama_scores(server_binary, gguf)
    type0 = reference_scores("bert", ckpt, [(QUERY, d) for d in DOCS], pooler=False, type_ids=False)
    ours = onnx_scores(convert_with_cli(gguf, tmp_path, "bert"), [(QUERY, d) for d in DOCS])
    record(
        "bert",
        llama_vs_type0_max_abs_diff=float(np.max(np.abs(theirs - type0))),
        llama_vs_ours_max_abs_diff=float(np.max(np.abs(theirs - ours))),
    )
    assert np.max(np.abs(theirs - type0)) <= 0.05


def test_k_quant_ggufs_score_like_hf(server_binary, checkpoint, tmp_path):
    """Q4_K_M / Q5_K_M / Q6_K files from llama-quantize (K-quants need rows that are multiples of
    256, so this uses a 256-wide XLM-R with the fixture's tokenizer)."""
    import shutil

    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from rerank.converters.convert import convert
    from rerank.converters.sources import load_source

    wide = tmp_path / "wide"
    shutil.copytree(checkpoint("xlmr"), wide)
    (wide / "model.safetensors").unlink()
    config = json.loads((checkpoint("xlmr") / "config.json").read_text())
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(
        XLMRobertaConfig(
            vocab_size=config["vocab_size"],
            hidden_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=config["max_position_embeddings"],
            num_labels=1,
            pad_token_id=1,
            type_vocab_size=1,
            initializer_range=0.05,
        )
    )
    model.save_pretrained(wide)
    bundle = load_source(str(wide), progress=lambda _: None)
    convert(bundle.loaded, name="hf", out_dir=tmp_path, source_folder=bundle.folder, progress=lambda _: None)
    items = [(QUERY, d) for d in DOCS]
    hf = onnx_scores(tmp_path / "hf", items)
    f32 = convert_to_gguf(wide, tmp_path / "wide-f32.gguf", "f32")
    quantize = server_binary.parent / "llama-quantize"
    for kind in ("Q4_K_M", "Q5_K_M", "Q6_K"):
        path = tmp_path / f"wide-{kind}.gguf"
        subprocess.run([str(quantize), str(f32), str(path), kind], check=True, capture_output=True)
        ours = onnx_scores(convert_with_cli(path, tmp_path, kind.lower()), items)
        diff, rho = float(np.max(np.abs(ours - hf))), spearman(ours, hf)
        record(f"xlmr-256 {kind}", max_abs_diff=diff, spearman=rho)
        print(f"{kind}: max |Δ| vs HF {diff:.3e}, Spearman {rho:.4f}")
        assert rho >= 0.9 and diff <= 0.1
