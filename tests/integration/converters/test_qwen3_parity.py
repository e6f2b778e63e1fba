"""llama.cpp's ``llama-server --reranking`` on the same Qwen3-Reranker GGUF as a second oracle
(``make test-parity``, which builds llama-server).

llama-server fills its ``rerank`` chat template (the model card's prompt with the default
instruction) and returns ``softmax([yes, no])[yes]`` from the file's ``cls.output`` rows: the
model card's probability. It is compared as a logit, ``log(p / (1 - p))``, with ours (the same
file converted by rerank-convert), and each figure is recorded in ``build/parity.json``."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import pytest

from rerank.converters.testing.llama_cpp import (
    LlamaServerExited,
    convert_to_gguf,
    llama_rerank,
    llama_server_binary,
    record_parity,
)
from rerank.converters.testing.qwen3 import make_qwen3_checkpoint, published_tokenizer
from rerank.converters.variants import spearman
from rerank.service.model_folder import read_model_folder
from rerank.service.scoring import score_pairs
from tests.support import REPO
from tests.support.conversions import convert_with_cli

pytestmark = pytest.mark.parity

QUERY = "what do giant pandas eat?"
DOCS = [
    "The giant panda eats bamboo shoots and leaves.",
    "A red car drove past.",
    "熊猫吃竹子",
    "pandas",
    "Bamboo forests in Sichuan.",
    "Stock markets fell on Tuesday.",
    "Большая панда питается бамбуком.",
    "1864 pandas live in the wild.",
]
RESULTS = REPO / "build" / "parity.json"
# llama.cpp's own kernels against ours on the same weights: measured on the fixture 2.4e-3 (f32)
# and 1.9e-3 to 5.4e-3 (f16) logit; the bounds leave room for another CPU's kernels. q8_0
# (llama.cpp also quantises the activations to 8 bits): 0.150 on Zen 4; on the AMX machine it
# could not be measured (see the SIGILL note below).
TOLERANCE = {"f32": 0.01, "f16": 0.01, "q8_0": 0.2}


@pytest.fixture(scope="module")
def server_binary() -> Path:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("llama-server not built: run tools/build_llama_cpp.sh (make test-parity does)")
    return binary


@pytest.mark.parametrize(
    ("outtype", "tokenizer"), [("f32", "trained"), ("f16", "trained"), ("q8_0", "trained"), ("f32", "published")]
)
def test_llama_server_agrees_with_our_conversion_of_its_gguf(
    outtype, tokenizer, server_binary, qwen3_checkpoint, tmp_path
):
    # "published": Qwen3's real tokenizer, which llama-server then splits text with as it splits
    # the published models' (its qwen2 pre-tokenizer, recognised without a fallback).
    if tokenizer == "published":
        checkpoint = make_qwen3_checkpoint(tmp_path / "published", "tiny", tokenizer=published_tokenizer())
    else:
        checkpoint = qwen3_checkpoint()
    name = f"qwen3-reranker-tiny-{outtype}" + ("-published" if tokenizer == "published" else "")
    gguf = convert_to_gguf(checkpoint, tmp_path / f"{name}.gguf", outtype, fallback=tokenizer == "trained")
    folder = convert_with_cli(gguf, tmp_path, name, "--variants", "none")
    ours = score_pairs(folder, read_model_folder(folder), [(QUERY, d) for d in DOCS])
    try:
        probabilities = np.clip(llama_rerank(server_binary, gguf, QUERY, DOCS), 1e-12, 1 - 1e-12)
    except LlamaServerExited as exc:
        if exc.returncode != -signal.SIGILL:
            raise
        # Seen for q8_0 on a VM that lists AMX but faults on its tile instructions (tilezero in
        # ggml's AMX Q8_0 kernel, which a GGML_NATIVE build uses): the host's limit, not a score.
        pytest.skip(f"llama-server died of SIGILL on {gguf.name}: its native build's kernels do not run on this host")
    theirs = np.log(probabilities / (1 - probabilities))
    diff, rho = float(np.max(np.abs(ours - theirs))), spearman(ours, theirs)
    sigmoid_diff = float(np.max(np.abs(1 / (1 + np.exp(-ours)) - probabilities)))
    record_parity(
        RESULTS,
        f"qwen3-tiny {outtype}" + (" published tokenizer" if tokenizer == "published" else ""),
        max_abs_logit_diff=diff,
        max_abs_probability_diff=sigmoid_diff,
        spearman=rho,
    )
    print(
        f"qwen3 {outtype} ({tokenizer} tokenizer): llama-server vs ours max |Δ logit| {diff:.3e}, "
        f"|Δ p| {sigmoid_diff:.3e}, Spearman {rho:.4f}"
    )
    assert rho >= 0.95 and diff <= TOLERANCE[outtype]
    assert not math.isnan(diff)
