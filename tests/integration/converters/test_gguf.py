"""GGUF input: files made from the fixture checkpoints by llama.cpp's own convert_hf_to_gguf.py
(and, for GTE, which upstream cannot convert, written in llama-box's layout) are converted by
rerank-convert and must score like the same checkpoint converted from Hugging Face."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rerank.converters.convert import convert
from rerank.converters.families.encoder import POOLER_DROPPED
from rerank.converters.sources import load_source
from rerank.converters.testing.corpus import multilingual_strings
from rerank.converters.testing.llama_cpp import convert_to_gguf
from tests.reference import reference_scores
from tests.support import REPO
from tests.support.conversions import convert_with_cli, onnx_scores

FULL = ("xlmr", "jina-v2")  # llama.cpp keeps every weight of these
NO_POOLER = ("bert", "jina-v1")  # llama.cpp's converter drops BERT's pooler
# Measured here on the fixtures (random weights of std 0.3, far rougher than trained ones; logits
# spread over ~4): f32 0 (same weights, same graph), f16 up to 5.2e-3, q8_0 up to 0.15.
TOLERANCE = {"f32": 1e-4, "f16": 2e-2, "q8_0": 0.3}


def pairs() -> list[tuple[str, str]]:
    texts = multilingual_strings(200, seed=3)
    queries = [t for t in texts if 0 < len(t) < 40][:10]
    return [(q, d) for q, d in zip(queries, texts[50:60], strict=False)] + [("panda", "the giant panda eats bamboo")]


@pytest.fixture(scope="module")
def ggufs(checkpoint, tmp_path_factory):
    """(kind, outtype) -> GGUF path, made by llama.cpp's converter."""
    out = tmp_path_factory.mktemp("gguf")
    jobs = [(k, t) for k in FULL for t in ("f32", "f16", "q8_0")] + [(k, "f32") for k in NO_POOLER]
    with ThreadPoolExecutor(4) as pool:
        paths = pool.map(lambda j: convert_to_gguf(checkpoint(j[0]), out / f"{j[0]}-{j[1]}.gguf", j[1]), jobs)
        return dict(zip(jobs, paths, strict=False))


@pytest.fixture(scope="module")
def hf_folders(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf-models")
    for kind in FULL + NO_POOLER + ("gte",):
        bundle = load_source(str(checkpoint(kind)), progress=lambda _: None)
        convert(bundle.loaded, name=kind, out_dir=out, source_folder=bundle.folder, progress=lambda _: None)
    return out


@pytest.mark.parametrize("kind", FULL)
@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_full_weight_gguf_scores_like_hf(kind, outtype, ggufs, hf_folders, tmp_path):
    folder = convert_with_cli(ggufs[(kind, outtype)], tmp_path, f"{kind}-{outtype}")
    config = json.loads((folder / "rerank.json").read_text())
    assert config["source"]["format"] == "gguf" and config["notes"] == []
    assert config["source"]["dtype"] == {"f32": "f32", "f16": "f16", "q8_0": "q8_0"}[outtype]
    items = pairs()
    ours, hf = onnx_scores(folder, items), onnx_scores(hf_folders / kind, items)
    diff = float(np.max(np.abs(ours - hf)))
    print(f"{kind} {outtype}: max |Δ logit| vs HF = {diff:.2e}")
    assert diff <= TOLERANCE[outtype]
    assert np.argmax(ours) == np.argmax(hf)


def test_bert_gguf_without_pooler(ggufs, checkpoint, tmp_path):
    """The file has no pooler and llama.cpp puts the classifier in ``cls.output``: what it can
    express is classifier(h0) on the full backbone, with the token-type table it still holds.
    Reference: transformers' BertModel + that head."""
    folder = convert_with_cli(ggufs[("bert", "f32")], tmp_path, "bert-gguf")
    config = json.loads((folder / "rerank.json").read_text())
    assert config["notes"][0] == POOLER_DROPPED.format(form="classifier(h0)") and config["spec"]["head"] == "linear"
    items = pairs()
    expected = reference_scores("bert", checkpoint("bert"), items, pooler=False)
    np.testing.assert_allclose(onnx_scores(folder, items), expected, atol=1e-4, rtol=0)


def test_jina_v1_gguf_without_pooler(ggufs, checkpoint, tmp_path):
    folder = convert_with_cli(ggufs[("jina-v1", "f32")], tmp_path, "jina-v1-gguf")
    config = json.loads((folder / "rerank.json").read_text())
    assert config["notes"] == [POOLER_DROPPED.format(form="tanh(classifier(h0))")]
    assert config["spec"]["positions"] == "alibi" and config["spec"]["head"] == "tanh"
    items = pairs()
    expected = reference_scores("jina-v1", checkpoint("jina-v1"), items, pooler=False)
    np.testing.assert_allclose(onnx_scores(folder, items), expected, atol=1e-4, rtol=0)


def test_gte_gguf_in_llama_box_layout(checkpoint, ggufs, hf_folders, tmp_path):
    """Upstream llama.cpp cannot convert GTE; GPUStack's files come from llama-box's converter.
    This writes that layout (arch ``new``, fused qkv, [up | gate] ffn_up, cls = pooler,
    cls.output = classifier, NTK folded into freq_base) from the fixture checkpoint."""
    from tests.gguf_writer import write_llama_box_gte

    # The gte fixture shares the xlmr fixture's tokenizer (same SentencePiece training).
    path = write_llama_box_gte(checkpoint("gte"), tmp_path / "gte.gguf", ggufs[("xlmr", "f32")])
    folder = convert_with_cli(path, tmp_path, "gte-gguf")
    items = pairs()
    np.testing.assert_allclose(onnx_scores(folder, items), onnx_scores(hf_folders / "gte", items), atol=1e-4, rtol=0)


def test_not_a_reranker_is_refused(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "llama.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = subprocess.run(
        [sys.executable, "-m", "rerank.converters.cli", str(path), "--name", "x", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "not a supported reranker" in result.stderr
