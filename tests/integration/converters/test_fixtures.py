"""Checks of the fixture builders (:mod:`rerank.converters.testing`): checkpoint layouts, tokenizers, scores, text."""

from __future__ import annotations

import json
import pathlib
import time
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerank.converters.testing.checkpoints import (
    GTE_EXTRA_VOCAB_ROWS,
    HIDDEN,
    INTERMEDIATE,
    KINDS,
    LAYERS,
    make_checkpoint,
)
from rerank.converters.testing.corpus import LANGUAGES, multilingual_strings, training_corpus
from tests.reference import gte_remote_code_logit, reference_scores

QUERY, DOC = "What is a panda?", "The giant panda is a bear species endemic to China."


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {kind: make_checkpoint(kind, root / kind) for kind in KINDS}


def _config(folder: pathlib.Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def _shapes(folder: pathlib.Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - not iterable


def _dtypes(folder: pathlib.Path) -> set[torch.dtype]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {f.get_tensor(name).dtype for name in f.keys()}  # noqa: SIM118 - not iterable


def _pairs(n: int = 20) -> tuple[list[str], list[str]]:
    lines = training_corpus(n_lines=2 * n, seed=123)
    return lines[0::2], lines[1::2]


# --- layout ---------------------------------------------------------------------------------------

FILES = {
    "xlmr": {
        "config.json",
        "model.safetensors",
        "sentencepiece.bpe.model",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    },
    "bert": {
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    },
    "jina-v1": {
        "config.json",
        "merges.txt",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    },
    "jina-v2": {
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    },
    "gte": {
        "config.json",
        "model.safetensors",
        "sentencepiece.bpe.model",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_files(folders: dict[str, pathlib.Path], kind: str) -> None:
    assert {p.name for p in folders[kind].iterdir()} == FILES[kind]
    with safe_open(str(folders[kind] / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}


def _transformers_names(folder: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the transformers class the folder names, after checking it loads cleanly."""
    model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_xlmr_layout(folders: dict[str, pathlib.Path]) -> None:
    folder = folders["xlmr"]
    shapes = _shapes(folder)
    assert shapes == _transformers_names(folder)
    cfg = _config(folder)
    assert cfg["architectures"] == ["XLMRobertaForSequenceClassification"] and cfg["model_type"] == "xlm-roberta"
    assert (cfg["max_position_embeddings"], cfg["pad_token_id"], cfg["type_vocab_size"]) == (130, 1, 1)
    assert cfg["layer_norm_eps"] == 1e-5 and cfg["id2label"] == {"0": "LABEL_0"}
    assert shapes["roberta.embeddings.position_embeddings.weight"] == (130, HIDDEN)
    assert shapes["roberta.embeddings.word_embeddings.weight"] == (cfg["vocab_size"], HIDDEN)
    assert shapes["classifier.out_proj.weight"] == (1, HIDDEN)


def test_bert_layout(folders: dict[str, pathlib.Path]) -> None:
    folder = folders["bert"]
    shapes = _shapes(folder)
    assert shapes == _transformers_names(folder) | {"bert.embeddings.position_ids": (1, 128)}
    cfg = _config(folder)
    assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["type_vocab_size"] == 2
    assert shapes["bert.embeddings.word_embeddings.weight"] == (cfg["vocab_size"], HIDDEN)
    assert shapes["classifier.weight"] == (1, HIDDEN) and shapes["bert.pooler.dense.weight"] == (HIDDEN, HIDDEN)


def test_jina_v1_layout(folders: dict[str, pathlib.Path]) -> None:
    shapes = _shapes(folders["jina-v1"])
    cfg = _config(folders["jina-v1"])
    vocab = cfg["vocab_size"]
    expected = {
        "bert.embeddings.word_embeddings.weight": (vocab, HIDDEN),
        "bert.embeddings.token_type_embeddings.weight": (2, HIDDEN),
        "bert.embeddings.LayerNorm.weight": (HIDDEN,),
        "bert.embeddings.LayerNorm.bias": (HIDDEN,),
        "bert.pooler.dense.weight": (HIDDEN, HIDDEN),
        "bert.pooler.dense.bias": (HIDDEN,),
        "classifier.weight": (1, HIDDEN),
        "classifier.bias": (1,),
    }
    for i in range(LAYERS):
        layer = f"bert.encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            expected |= {
                f"{layer}.attention.self.{proj}.weight": (HIDDEN, HIDDEN),
                f"{layer}.attention.self.{proj}.bias": (HIDDEN,),
            }
        expected |= {
            f"{layer}.attention.output.dense.weight": (HIDDEN, HIDDEN),
            f"{layer}.attention.output.dense.bias": (HIDDEN,),
            f"{layer}.attention.output.LayerNorm.weight": (HIDDEN,),
            f"{layer}.attention.output.LayerNorm.bias": (HIDDEN,),
            f"{layer}.mlp.gated_layers.weight": (2 * INTERMEDIATE, HIDDEN),
            f"{layer}.mlp.wo.weight": (HIDDEN, INTERMEDIATE),
            f"{layer}.mlp.wo.bias": (HIDDEN,),
            f"{layer}.mlp.layernorm.weight": (HIDDEN,),
            f"{layer}.mlp.layernorm.bias": (HIDDEN,),
        }
    assert shapes == expected
    assert cfg["position_embedding_type"] == "alibi" and cfg["feed_forward_type"] == "geglu"
    assert cfg["architectures"] == ["JinaBertForMaskedLM"] and "id2label" not in cfg


def test_jina_v2_layout(folders: dict[str, pathlib.Path]) -> None:
    shapes = _shapes(folders["jina-v2"])
    cfg = _config(folders["jina-v2"])
    assert shapes["roberta.encoder.layers.0.mixer.Wqkv.weight"] == (3 * HIDDEN, HIDDEN)
    assert shapes["roberta.encoder.layers.1.mlp.fc1.weight"] == (INTERMEDIATE, HIDDEN)
    assert shapes["roberta.emb_ln.weight"] == (HIDDEN,)
    assert shapes["roberta.embeddings.position_embeddings.weight"] == (1026, HIDDEN)
    assert shapes["classifier.out_proj.weight"] == (1, HIDDEN)
    assert len(shapes) == 5 + 4 + LAYERS * 12
    assert not any(".attention." in name or "encoder.layer." in name for name in shapes)
    assert _dtypes(folders["jina-v2"]) == {torch.bfloat16}
    assert cfg["use_flash_attn"] is True and cfg["max_position_embeddings"] == 1026
    assert cfg["auto_map"]["AutoConfig"] == "configuration_xlm_roberta.XLMRobertaFlashConfig"


def test_gte_layout(folders: dict[str, pathlib.Path]) -> None:
    shapes = _shapes(folders["gte"])
    cfg = _config(folders["gte"])
    assert shapes["new.encoder.layer.0.attention.qkv_proj.weight"] == (3 * HIDDEN, HIDDEN)
    assert shapes["new.encoder.layer.0.mlp.up_gate_proj.weight"] == (2 * INTERMEDIATE, HIDDEN)
    assert "new.encoder.layer.0.mlp.up_gate_proj.bias" not in shapes
    assert shapes["new.embeddings.word_embeddings.weight"] == (cfg["vocab_size"], HIDDEN)
    assert not any("position" in name for name in shapes)
    assert (cfg["model_type"], cfg["architectures"]) == ("new", ["NewForSequenceClassification"])
    assert (cfg["rope_theta"], cfg["rope_scaling"]) == (20000, {"factor": 8.0, "type": "ntk"})
    assert _dtypes(folders["gte"]) == {torch.float16}


# --- tokenizers ------------------------------------------------------------------------------------


def _auto_tokenizer(folder: pathlib.Path):
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


@pytest.mark.parametrize("kind", KINDS)
def test_pair_template(folders: dict[str, pathlib.Path], kind: str) -> None:
    folder = folders[kind]
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf = _auto_tokenizer(folder)
    enc = raw.encode(QUERY, DOC)
    q = raw.encode(QUERY, add_special_tokens=False).tokens
    d = raw.encode(DOC, add_special_tokens=False).tokens
    if kind == "bert":
        assert enc.tokens == ["[CLS]", *q, "[SEP]", *d, "[SEP]"]
        assert enc.type_ids == [0] * (len(q) + 2) + [1] * (len(d) + 1)
        assert hf(QUERY, DOC)["token_type_ids"] == enc.type_ids
    else:
        assert enc.tokens == ["<s>", *q, "</s>", "</s>", *d, "</s>"]
        assert set(enc.type_ids) == {0}
        assert "token_type_ids" not in hf(QUERY, DOC)
        assert [raw.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert hf(QUERY, DOC)["input_ids"] == enc.ids
    assert hf.pad_token_id == (0 if kind == "bert" else 1)


@pytest.mark.parametrize("kind", ["xlmr", "jina-v2", "gte"])
def test_xlmr_vocabulary(folders: dict[str, pathlib.Path], kind: str) -> None:
    raw = Tokenizer.from_file(str(folders[kind] / "tokenizer.json"))
    size = raw.get_vocab_size()
    assert raw.token_to_id("<mask>") == size - 1
    rows = _config(folders[kind])["vocab_size"]
    assert rows == size + (GTE_EXTRA_VOCAB_ROWS if kind == "gte" else 0)
    normalizer = json.loads((folders[kind] / "tokenizer.json").read_text(encoding="utf-8"))["normalizer"]
    assert normalizer["type"] == ("Precompiled" if kind == "jina-v2" else "Sequence")


@pytest.mark.parametrize("kind", ["xlmr", "gte"])
def test_sentencepiece_offset(folders: dict[str, pathlib.Path], kind: str) -> None:
    """HF ids are the SentencePiece ids shifted by the fairseq offset of 1 (``<unk>``: 0 -> 3)."""
    sp = spm.SentencePieceProcessor(model_file=str(folders[kind] / "sentencepiece.bpe.model"))
    raw = Tokenizer.from_file(str(folders[kind] / "tokenizer.json"))
    for text in training_corpus(n_lines=50, seed=7):
        assert raw.encode(text, add_special_tokens=False).ids == [i + 1 if i else 3 for i in sp.encode(text)]


# --- scores ----------------------------------------------------------------------------------------


def test_gte_fixture_is_sensitive_to_ntk_scaling(folders: dict[str, pathlib.Path]) -> None:
    """The gte fixture's RoPE scaling moves its scores well past the parity tolerance, so a
    conversion that got the NTK translation wrong could not pass the parity tests."""
    folder = folders["gte"]
    w = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    queries, docs = _pairs()
    tok = _auto_tokenizer(folder)
    moved = []
    with torch.no_grad():
        for q, d in zip(queries, docs, strict=True):
            enc = dict(tok([q], [d], return_tensors="pt"))
            moved.append(
                gte_remote_code_logit(w, _config(folder), enc) - gte_remote_code_logit(w, _config(folder), enc, 1.0)
            )
    assert max(abs(m) for m in moved) > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_scores_vary(folders: dict[str, pathlib.Path], kind: str) -> None:
    scores = reference_scores(kind, folders[kind], list(zip(*_pairs(), strict=True)))
    assert scores.shape == (20,)
    assert np.isfinite(scores).all()
    assert scores.std() > 0.3


# --- determinism and speed -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_fast(folders: dict[str, pathlib.Path], tmp_path: pathlib.Path, kind: str) -> None:
    start = time.perf_counter()
    again = make_checkpoint(kind, tmp_path / "again")
    assert time.perf_counter() - start < 10
    for path in folders[kind].iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    other = make_checkpoint(kind, tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()


def test_unknown_kind(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        make_checkpoint("roberta", tmp_path)


# --- text generators ---------------------------------------------------------------------------------


def test_multilingual_strings() -> None:
    strings = multilingual_strings(2000)
    assert len(strings) == 2000 and len(set(strings)) == 2000
    assert strings == multilingual_strings(2000) and strings != multilingual_strings(2000, seed=1)
    assert multilingual_strings(3) == strings[:3]
    text = "".join(strings)

    def has(predicate) -> bool:
        return any(predicate(s) for s in strings)

    for name in ("CJK UNIFIED", "ARABIC", "DEVANAGARI", "CYRILLIC", "GREEK", "THAI", "HANGUL", "HEBREW"):
        assert any(name in unicodedata.name(c, "") for c in set(text)), name
    for char in ("\t", "\n", "\u00a0", "\u200b", "\u200d", "\U0001f43c"):
        assert char in text, repr(char)
    assert has(lambda s: s == "") and has(lambda s: s.strip() == "" and s != "")
    assert has(lambda s: "  " in s)
    assert has(lambda s: unicodedata.normalize("NFC", s) != s)  # NFD accents
    assert has(lambda s: any(len(word) >= 100 for word in s.split()))
    assert has(lambda s: any(c.isdigit() for c in s)) and has(lambda s: s.isupper())


def test_training_corpus() -> None:
    lines = training_corpus()
    assert len(lines) == 3000 and lines == training_corpus()
    for words in LANGUAGES.values():
        assert any(word in line for line in lines for word in words[:5])
