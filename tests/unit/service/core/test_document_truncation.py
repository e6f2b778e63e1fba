"""PairEncoder's per-request document options: a token cap (Cohere's ``max_tokens_per_doc``),
left truncation (TEI's ``truncation_direction``) and refusing a long document (TEI's
``truncate: false``), each against the ``tokenizers`` library's own pair truncation."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from rerank.service.core.tokenization import PairEncoder
from rerank.service.errors import DocumentTooLong
from rerank.service.model_folder import PairTemplate

WORDS = [f"w{i}" for i in range(40)]
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
TEMPLATE = PairTemplate(prefix=((2, 0),), middle=((3, 0),), suffix=((3, 1),), query_type=0, document_type=1)
MAX_LENGTH = 16


def _tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tokenizer


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> PairEncoder:
    path: Path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    _tokenizer().save(str(path))
    return PairEncoder(path, TEMPLATE, MAX_LENGTH)


def reference(query: str, document: str, direction: str = "right") -> tuple[list[int], list[int]]:
    """``tokenizers``' own pair encoding, cutting only the document, from ``direction``."""
    tokenizer = _tokenizer()
    tokenizer.enable_truncation(MAX_LENGTH, strategy="only_second", direction=direction)
    encoding = tokenizer.encode(query, document)
    return encoding.ids, encoding.type_ids


def text(first: int, count: int) -> str:
    return " ".join(WORDS[first : first + count])


QUERY = text(0, 3)
LONG = text(5, 30)  # 30 tokens; the window leaves 16 - 3 special - 3 query = 10


def test_default_is_right_truncation_like_tokenizers(encoder):
    encoded = encoder.encode(QUERY, [LONG, text(5, 4)])
    for pair, document in zip(encoded.pairs, [LONG, text(5, 4)], strict=True):
        ids, types = reference(QUERY, document)
        assert pair.ids.tolist() == ids and pair.type_ids.tolist() == types
    assert encoded.truncated_tokens == [20, 0]


def test_left_truncation_keeps_the_tail_like_tokenizers(encoder):
    encoded = encoder.encode(QUERY, [LONG], side="left")
    ids, types = reference(QUERY, LONG, direction="left")
    assert encoded.pairs[0].ids.tolist() == ids and encoded.pairs[0].type_ids.tolist() == types
    assert encoded.pairs[0].ids.tolist() != reference(QUERY, LONG)[0]  # the test can tell the sides apart
    assert encoded.truncated_tokens == [20]


@pytest.mark.parametrize("side", ["right", "left"])
def test_cap_cuts_each_document_before_the_window(encoder, side):
    cap = 6
    encoded = encoder.encode(QUERY, [LONG, text(5, 4)], max_document_tokens=cap, side=side)
    kept = text(5, cap) if side == "right" else text(5 + 30 - cap, cap)
    assert encoded.pairs[0].ids.tolist() == reference(QUERY, kept)[0]
    assert encoded.pairs[1].ids.tolist() == reference(QUERY, text(5, 4))[0]  # shorter than the cap: whole
    assert encoded.truncated_tokens == [30 - cap, 0]


def test_cap_above_the_window_changes_nothing(encoder):
    plain = encoder.encode(QUERY, [LONG])
    capped = encoder.encode(QUERY, [LONG], max_document_tokens=4096)
    assert [p.ids.tolist() for p in capped.pairs] == [p.ids.tolist() for p in plain.pairs]
    assert capped.truncated_tokens == plain.truncated_tokens


def test_cap_then_windows(encoder):
    encoded = encoder.encode(QUERY, [LONG], "window", max_document_tokens=12)
    assert encoded.windows == [2] and encoded.truncated_tokens == [18]
    assert all(len(p.ids) <= MAX_LENGTH for p in encoded.pairs)


def test_reject_refuses_only_a_document_that_does_not_fit(encoder):
    fits = encoder.encode(QUERY, [text(5, 10)], "reject")
    assert fits.truncated_tokens == [0] and fits.pairs[0].ids.tolist() == reference(QUERY, text(5, 10))[0]
    with pytest.raises(DocumentTooLong) as info:
        encoder.encode(QUERY, [text(5, 10), text(5, 11)], "reject")
    assert info.value.index == 1 and info.value.field == "documents[1]"
    assert info.value.metadata == {"tokens": "11", "limit": "10"}
