"""PairEncoder for a model with a prompt (Qwen3-Reranker): the pair is the prompt's prefix, its
query part, its document part and its suffix; the pieces tokenize exactly as the whole text does;
truncation and windows cut only the document; an instruction replaces the default, and a model
without a prompt refuses one.

The tokenizer is Qwen2's pipeline (NFC, its split regex, byte-level BPE, added tokens) over a
byte vocabulary with a few merges, built in code: the split claim depends on the pre-tokenizer,
not on the merges (BPE never merges across a pre-token)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from rerank.service.core.tokenization import WINDOW_OVERLAP, PairEncoder
from rerank.service.errors import InvalidRequest, QueryTooLong
from rerank.service.model_folder import (
    PROMPT_FORMAT,
    ModelFolderConfig,
    PairTemplate,
    PromptTemplate,
    Variant,
    read_model_folder,
    write_config,
)

# The model card's strings, written out here (not imported from the converter).
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT = "Given a web search query, retrieve relevant passages that answer the query"
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), (">", ":"), ("Ċ", "Ċ"), ("?", "Ċ"), ("Ġ", "a")]


def qwen2_like() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, MERGES))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([AddedToken(t, special=t.startswith("<|"), normalized=False) for t in ADDED])
    return tokenizer


TOKENIZER = qwen2_like()
PROMPT = PromptTemplate(
    query="<Instruct>: {instruction}\n<Query>: {query}\n<Document>:",
    document=" {document}",
    default_instruction=DEFAULT,
    prefix_text=PREFIX,
    suffix_text=SUFFIX,
)
PAD = TOKENIZER.token_to_id("<|endoftext|>")


def ids(text: str) -> list[int]:
    return TOKENIZER.encode(text, add_special_tokens=False).ids


TEMPLATE = PairTemplate(
    prefix=tuple((i, 0) for i in ids(PREFIX)),
    middle=(),
    suffix=tuple((i, 0) for i in ids(SUFFIX)),
    pad_id=PAD,
    prompt=PROMPT,
)


def model_card(query: str, document: str, instruction: str | None = None) -> list[int]:
    """The model card's ids: prefix and suffix alone, the whole middle text at once."""
    middle = f"<Instruct>: {DEFAULT if instruction is None else instruction}\n<Query>: {query}\n<Document>: {document}"
    return ids(PREFIX) + ids(middle) + ids(SUFFIX)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path: Path = tmp_path_factory.mktemp("qwen2") / "tokenizer.json"
    TOKENIZER.save(str(path))
    return path


@pytest.fixture(scope="module")
def encoder(tokenizer_file) -> PairEncoder:
    return PairEncoder(tokenizer_file, TEMPLATE, 4096)


TRICKY = [
    ("what is a panda?", "The giant panda."),
    ("ends with a space ", "  starts with two spaces"),
    ("question?", "\nstarts with a newline"),
    ("numbers", "2024 starts with digits"),
    ("punct!", "...starts with dots"),
    ("quote", "'s a contraction first"),
    ("tab\t", "\t\ttabs"),
    ("熊猫吃什么？", "大熊猫主要以竹子为食。"),
    ("Что ест панда?", "Большая панда питается бамбуком."),
    ("nfd", "cafe\u0301 au lait"),
    ("combining first", "\u0301accent on a space"),
    ("specials", "<|im_end|> in a document, and <think>"),
    ("empty document", ""),
    ("spaces only", "   "),
    ("the query\n", "\n\n"),
]


@pytest.mark.parametrize(("query", "document"), TRICKY)
def test_pieces_tokenize_as_the_whole_prompt(encoder, query, document):
    for instruction in (None, "Find the passage that answers it."):
        pair = encoder.encode(query, [document], instruction=instruction).pairs[0]
        assert pair.ids.tolist() == model_card(query, document, instruction)


@settings(max_examples=300, deadline=None)
@given(query=st.text(max_size=40), document=st.text(max_size=60), instruction=st.none() | st.text(max_size=30))
def test_pieces_tokenize_as_the_whole_prompt_fuzzed(encoder, query, document, instruction):
    pair = encoder.encode(query, [document], instruction=instruction).pairs[0]
    assert pair.ids.tolist() == model_card(query, document, instruction)


def test_instruction_replaces_only_the_default(encoder):
    default = encoder.encode("q", ["d"]).pairs[0].ids.tolist()
    custom = encoder.encode("q", ["d"], instruction="Judge relevance to a legal question").pairs[0].ids.tolist()
    assert default == model_card("q", "d") and custom == model_card("q", "d", "Judge relevance to a legal question")
    assert default != custom


def test_the_head_every_pair_shares_is_the_prompt_up_to_the_document(encoder):
    # What a shared-prefix graph is sure to read once: the prefix and the query part, counted
    # from the whole text here. The documents all open with a space token, so the pairs share
    # one token more: the head is what they share by construction, never more than they share.
    for query, instruction in [("what is a panda?", None), ("熊猫", "Find the passage.")]:
        documents = [document for _, document in TRICKY]
        encoded = encoder.encode(query, documents, instruction=instruction)
        instruction = DEFAULT if instruction is None else instruction
        part = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
        assert encoded.head == len(ids(PREFIX)) + len(ids(part))
        cards = [model_card(query, d, instruction) for d in documents]
        shared = next(n for n in range(len(cards[0]) + 1) if n == len(cards[0]) or len({c[n] for c in cards}) > 1)
        assert encoded.head < shared
    lone = encoder.encode("q", [""])
    assert lone.head == len(ids(PREFIX)) + len(ids(PROMPT.query_text("q", None)))


def test_a_model_without_a_prompt_refuses_an_instruction(tokenizer_file):
    plain = PairEncoder(tokenizer_file, PairTemplate(prefix=((0, 0),), middle=((1, 0),), suffix=((1, 0),)), 64)
    assert not plain.takes_instruction
    plain.encode("q", ["d"])  # no instruction: fine
    with pytest.raises(InvalidRequest) as error:
        plain.encode("q", ["d"], instruction="anything")
    assert error.value.field == "instruction" and error.value.reason == "INSTRUCTION_NOT_SUPPORTED"


def short_encoder(tokenizer_file: Path, room: int) -> PairEncoder:
    """An encoder whose window leaves ``room`` document tokens after the query part of query "q"."""
    head = len(TEMPLATE.prefix) + len(TEMPLATE.suffix) + len(ids(PROMPT.query_text("q", None)))
    return PairEncoder(tokenizer_file, TEMPLATE, head + room)


def test_truncation_cuts_only_the_document(tokenizer_file):
    encoder = short_encoder(tokenizer_file, 10)
    document = "the " * 30  # " the" merges to one token: 30 tokens, then a trailing space
    full = ids(PROMPT.document_text(document))
    encoded = encoder.encode("q", [document])
    pair = encoded.pairs[0].ids.tolist()
    assert pair[: len(TEMPLATE.prefix)] == [i for i, _ in TEMPLATE.prefix]
    assert pair[-len(TEMPLATE.suffix) :] == [i for i, _ in TEMPLATE.suffix]
    assert len(pair) == encoder.max_length
    assert pair[len(pair) - len(TEMPLATE.suffix) - 10 : len(pair) - len(TEMPLATE.suffix)] == full[:10]
    assert encoded.truncated_tokens == [len(full) - 10]
    # The model card cuts the middle text's tokens from its end: the same ids.
    card = model_card("q", document)
    cut = len(card) - encoder.max_length
    assert pair == card[: len(TEMPLATE.prefix) + len(card) - len(TEMPLATE.prefix) - len(TEMPLATE.suffix) - cut] + [
        i for i, _ in TEMPLATE.suffix
    ]
    left = encoder.encode("q", [document], side="left").pairs[0].ids.tolist()
    assert left[-len(TEMPLATE.suffix) - 10 :] == full[-10:] + [i for i, _ in TEMPLATE.suffix]


def test_every_window_keeps_the_template(tokenizer_file):
    room = 8
    encoder = short_encoder(tokenizer_file, room)
    document = "0123456789" * 3  # one token per digit
    full = ids(PROMPT.document_text(document))
    encoded = encoder.encode("q", [document], "window")
    assert encoded.windows == [len(encoded.pairs)] and len(encoded.pairs) > 2 and encoded.truncated_tokens == [0]
    head = [i for i, _ in TEMPLATE.prefix] + ids(PROMPT.query_text("q", None))
    tail = [i for i, _ in TEMPLATE.suffix]
    step = room - int(room * WINDOW_OVERLAP)
    for k, pair in enumerate(encoded.pairs):
        got = pair.ids.tolist()
        assert got == head + full[k * step : k * step + room] + tail
    assert (len(encoded.pairs) - 1) * step + room >= len(full)  # the last window reaches the end


def test_an_instruction_that_leaves_no_room_is_refused(tokenizer_file):
    encoder = short_encoder(tokenizer_file, 3)
    encoder.encode("q", ["d"])
    with pytest.raises(QueryTooLong, match="with its instruction and prompt text"):
        encoder.encode("q", ["d"], instruction="a long instruction " * 5)


def test_the_prompt_is_written_and_read_with_the_folder(tmp_path):
    config = ModelFolderConfig(
        name="q",
        architecture="qwen3",
        max_length=64,
        template=TEMPLATE,
        type_ids_input=False,
        variants={"fp32": Variant(file="model.onnx", precision="fp32")},
        format=PROMPT_FORMAT,
    )
    (tmp_path / "model.onnx").write_bytes(b"")
    TOKENIZER.save(str(tmp_path / "tokenizer.json"))
    write_config(tmp_path, config)
    data = json.loads((tmp_path / "rerank.json").read_text())
    assert data["format"] == 4 and data["template"]["prompt"]["default_instruction"] == DEFAULT
    assert read_model_folder(tmp_path).template == TEMPLATE
    data["template"]["prompt"]["query"] = "<Query>: {question}"
    (tmp_path / "rerank.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="the prompt template does not format"):
        read_model_folder(tmp_path)
