"""The tokenizer rebuilt from GGUF metadata encodes exactly like the checkpoint's own tokenizer.

GGUF files are made from the fixture checkpoints by llama.cpp's ``convert_hf_to_gguf.py``. The
reference is ``transformers.AutoTokenizer`` (what sentence-transformers runs), which must match
exactly. The raw ``tokenizer.json`` must match too, except where transformers 5 itself departs
from it: XLM-R text with leading, trailing or repeated whitespace (see test_matches_tokenizer_json).
"""

from __future__ import annotations

import base64
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFValueType, GGUFWriter
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from rerank.converters.errors import GgufError
from rerank.converters.gguf_file import GgufFile
from rerank.converters.gguf_tokenizer import tokenizer_from_gguf
from rerank.converters.testing.checkpoints import make_checkpoint
from rerank.converters.testing.corpus import multilingual_strings
from rerank.converters.testing.llama_cpp import convert_to_gguf

KINDS = ("xlmr", "bert", "jina-v1", "jina-v2")
STRINGS = multilingual_strings(2000)
PAIRS = list(zip(STRINGS, STRINGS[1:] + STRINGS[:1], strict=False))
SPECIALS_INLINE = [
    "<s>x</s>",
    "a <mask> b",
    "a<mask>b",
    "  <mask>  ",
    "<unk>",
    "<pad><pad>",
    "[CLS] hi [SEP]",
    "x [MASK] [UNK] [cls]",
]
SEP_KEY = "tokenizer.ggml.seperator_token_id"


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """kind -> (checkpoint folder, GGUF made by llama.cpp's converter), converted in parallel."""
    root = tmp_path_factory.mktemp("gguf_tokenizer")
    folders = {kind: make_checkpoint(kind, root / kind, seed=0) for kind in KINDS}
    with ThreadPoolExecutor(len(KINDS)) as pool:
        paths = pool.map(lambda k: convert_to_gguf(folders[k], root / f"{k}.gguf"), KINDS)
        files = dict(zip(KINDS, paths, strict=True))
    return {kind: (folders[kind], files[kind]) for kind in KINDS}


@pytest.fixture(scope="session")
def metadata(converted: dict[str, tuple[Path, Path]]) -> dict[str, dict[str, Any]]:
    return {kind: GgufFile.open(gguf).metadata for kind, (_, gguf) in converted.items()}


def reference(folder: Path) -> Tokenizer:
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def plain_whitespace(tokenizer: Tokenizer, text: str) -> bool:
    """After normalisation, non-empty with no leading, trailing or repeated spaces: where an
    old-style XLM-R tokenizer.json and transformers 5 (whitespace split) agree."""
    normalized = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
    return bool(normalized) and " ".join(normalized.split()) == normalized


def assert_same(ours: list[list[int]], theirs: list[list[int]], texts: list[Any]) -> None:
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {texts[bad[0]]!r}: {ours[bad[0]]} != {theirs[bad[0]]}"


@pytest.mark.parametrize("kind", KINDS)
def test_matches_tokenizer_json(kind: str, converted, metadata) -> None:
    ours, theirs = tokenizer_from_gguf(metadata[kind]), reference(converted[kind][0])
    exact = kind in ("bert", "jina-v1")
    strings = STRINGS if exact else [s for s in STRINGS if plain_whitespace(theirs, s)]
    pairs = PAIRS if exact else [p for p in PAIRS if all(plain_whitespace(theirs, t) for t in p)]
    assert len(strings) > 1000 and len(pairs) > 500
    singles = theirs.encode_batch(strings, add_special_tokens=False)
    mine = ours.encode_batch(strings, add_special_tokens=False)
    assert_same([e.ids for e in mine], [e.ids for e in singles], strings)
    ids = [e.ids for e in singles[:300]]
    assert ours.decode_batch(ids) == theirs.decode_batch(ids)

    pairs_ours, pairs_theirs = ours.encode_batch(pairs), theirs.encode_batch(pairs)
    assert_same([e.ids for e in pairs_ours], [e.ids for e in pairs_theirs], pairs)
    assert_same([e.type_ids for e in pairs_ours], [e.type_ids for e in pairs_theirs], pairs)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_auto_tokenizer(kind: str, converted, metadata) -> None:
    ours = tokenizer_from_gguf(metadata[kind])
    auto = AutoTokenizer.from_pretrained(converted[kind][0], trust_remote_code=False)
    texts = STRINGS + SPECIALS_INLINE
    assert_same(
        [e.ids for e in ours.encode_batch(texts, add_special_tokens=False)],
        auto(texts, add_special_tokens=False)["input_ids"],
        texts,
    )
    queries, documents = map(list, zip(*PAIRS, strict=False))
    encoded = auto(queries, documents, return_token_type_ids=True)
    pairs = ours.encode_batch(PAIRS)
    assert_same([e.ids for e in pairs], encoded["input_ids"], PAIRS)
    assert_same([e.type_ids for e in pairs], encoded["token_type_ids"], PAIRS)


def test_mask_placeholder_is_replaced(metadata) -> None:
    """From sentencepiece.bpe.model llama.cpp writes ``[PAD<n>]`` where XLM-R has ``<mask>``."""
    tokens = metadata["xlmr"]["tokenizer.ggml.tokens"]
    assert re.fullmatch(r"\[PAD\d+\]", tokens[-1])
    tokenizer = tokenizer_from_gguf(metadata["xlmr"])
    assert tokenizer.token_to_id("<mask>") == len(tokens) - 1
    assert tokenizer.encode("a <mask>", add_special_tokens=False).ids[-1] == len(tokens) - 1


def test_bert_lowercase_inferred_without_key(metadata) -> None:
    """Files older than ``tokenizer.ggml.normalizer.lowercase``: uncased vocabulary -> lowercase."""
    old = {k: v for k, v in metadata["bert"].items() if k != "tokenizer.ggml.normalizer.lowercase"}
    texts = STRINGS[:500]
    expected = [e.ids for e in tokenizer_from_gguf(metadata["bert"]).encode_batch(texts)]
    assert [e.ids for e in tokenizer_from_gguf(old).encode_batch(texts)] == expected


def _value_type(value: Any) -> tuple[GGUFValueType, GGUFValueType | None]:
    if isinstance(value, (list, np.ndarray)):
        sub = {
            np.dtype(np.float32): GGUFValueType.FLOAT32,
            np.dtype(np.int32): GGUFValueType.INT32,
            np.dtype(np.uint8): GGUFValueType.UINT8,
        }.get(getattr(value, "dtype", None), GGUFValueType.STRING)
        return GGUFValueType.ARRAY, sub
    types = {str: GGUFValueType.STRING, bool: GGUFValueType.BOOL, int: GGUFValueType.UINT32}
    return types[type(value)], None


def write_quirky_gguf(path: Path, metadata: dict[str, Any]) -> Path:
    """A vocabulary-only GGUF with the quirks of published llama-box files: the charsmap as a base64
    string, no ``add_sep_token``, ``add_space_prefix=false``, and the separator id written twice
    (a wrong second value, which must lose)."""
    writer = GGUFWriter(path, metadata["general.architecture"])
    keys = {k: v for k, v in metadata.items() if k.startswith("tokenizer.") and k != "tokenizer.ggml.add_sep_token"}
    keys["tokenizer.ggml.precompiled_charsmap"] = base64.b64encode(
        np.asarray(keys["tokenizer.ggml.precompiled_charsmap"], dtype=np.uint8).tobytes()
    ).decode()
    keys["tokenizer.ggml.add_space_prefix"] = False
    stand_in = SEP_KEY[:-1] + "X"  # GGUFWriter refuses duplicates: write another name, patch it below
    keys[stand_in] = metadata["tokenizer.ggml.padding_token_id"]
    for key, value in keys.items():
        writer.add_key_value(
            key, [v.item() for v in value] if isinstance(value, np.ndarray) else value, *_value_type(value)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    data = path.read_bytes()
    assert data.count(stand_in.encode()) == 1
    path.write_bytes(data.replace(stand_in.encode(), SEP_KEY.encode()))
    return path


def test_published_file_quirks(tmp_path: Path, converted, metadata) -> None:
    quirky = GgufFile.open(write_quirky_gguf(tmp_path / "quirky.gguf", metadata["xlmr"]))
    assert quirky.duplicate_keys == [SEP_KEY]
    assert quirky.metadata[SEP_KEY] == metadata["xlmr"][SEP_KEY]
    assert isinstance(quirky.metadata["tokenizer.ggml.precompiled_charsmap"], str)
    assert "tokenizer.ggml.add_sep_token" not in quirky.metadata

    ours = tokenizer_from_gguf(quirky.metadata)
    auto = AutoTokenizer.from_pretrained(converted["xlmr"][0], trust_remote_code=False)
    assert_same(
        [e.ids for e in ours.encode_batch(STRINGS, add_special_tokens=False)],
        auto(STRINGS, add_special_tokens=False)["input_ids"],
        STRINGS,
    )
    queries, documents = map(list, zip(*PAIRS, strict=False))
    assert_same([e.ids for e in ours.encode_batch(PAIRS)], auto(queries, documents)["input_ids"], PAIRS)


def test_unsupported_model(metadata) -> None:
    with pytest.raises(GgufError, match="llama"):
        tokenizer_from_gguf({**metadata["bert"], "tokenizer.ggml.model": "llama"})
