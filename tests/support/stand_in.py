"""A model without weights: a real word-level tokenizer, a model folder for it, a backend whose
score a test can predict (word overlap), and a model the batcher's tests can hold busy."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rerank.service.backends.base import Batch
from rerank.service.model_folder import (
    FORMAT_VERSION,
    PROMPT_FORMAT,
    ModelFolderConfig,
    PairTemplate,
    PromptTemplate,
    Variant,
    write_config,
)

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
FIRST_WORD_ID = 4
"""Ids below this are the specials of :func:`word_tokenizer`."""
BERT_LIKE = PairTemplate(prefix=((2, 0),), middle=((3, 0),), suffix=((3, 1),), query_type=0, document_type=1, pad_id=0)
"""``[CLS] query [SEP] document [SEP]``, the document and its ``[SEP]`` of type 1, for
:func:`word_tokenizer`'s ids (``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3)."""
STAND_IN_WORDS = (
    *("what", "is", "a", "the", "panda", "bear", "bamboo", "eats", "china", "giant", "red", "car"),
    *("fox", "quick", "brown", "lazy", "dog", "sleeps", "forest", "mountain", "river", "boom"),
)
"""The stand-in model's vocabulary; any other word is ``[UNK]``. ``boom`` makes it fail."""


def word_tokenizer(words: Iterable[str]) -> Any:
    """A ``tokenizers`` WordLevel tokenizer built in code: one token per whitespace-separated
    word (punctuation split off), the four BERT specials first, unknown words ``[UNK]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {PAD: 0, UNK: 1, CLS: 2, SEP: 3}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def write_stand_in_model(
    models_dir: Path, name: str, *, max_length: int = 16, prompt: PromptTemplate | None = None
) -> Path:
    """A model folder for :class:`StandInBackend`: a real ``tokenizer.json`` (:data:`STAND_IN_WORDS`)
    and ``rerank.json``, and an empty ``model.onnx`` that only the ONNX backend would read. With a
    ``prompt`` the model reads one, as an LLM reranker does, and so takes an instruction: the
    instruction's words are part of the query that the stand-in's score counts."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    word_tokenizer(STAND_IN_WORDS).save(str(folder / "tokenizer.json"))
    (folder / "model.onnx").write_bytes(b"")
    config = ModelFolderConfig(
        name=name,
        architecture="stand-in",
        max_length=max_length,
        template=replace(BERT_LIKE, prompt=prompt),
        type_ids_input=True,
        variants={"fp32": Variant(file="model.onnx", precision="fp32")},
        source={"name": "stand-in-source"},
        notes=("a stand-in for the tests",),
        format=PROMPT_FORMAT if prompt is not None else FORMAT_VERSION,
    )
    write_config(folder, config)
    return folder


class StandInBackend:
    """A :class:`~rerank.service.backends.base.Backend` without a model: a pair's logit is how many of
    its document's tokens (type 1, ``[SEP]`` aside) also occur in its query (type 0). A word
    overlap, so a test can say which document wins without running anything. A batch holding
    the word ``boom`` fails, with a message no client may see."""

    provider = "StandInExecutionProvider"
    precision = "fp32"
    variant_key = "fp32"
    streams = 1
    SECRET = "stand-in failure: secret detail 0xC0FFEE"

    def __init__(self, boom_id: int | None = None) -> None:
        self.boom_id = boom_id
        self.batches: list[Batch] = []

    @classmethod
    def for_folder(cls, folder: Path, config: ModelFolderConfig) -> StandInBackend:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id("boom"))

    def run(self, batch: Batch) -> np.ndarray:
        assert batch.token_type_ids is not None
        if self.boom_id is not None and (batch.input_ids == self.boom_id).any():
            raise RuntimeError(self.SECRET)
        self.batches.append(batch)
        logits = []
        for ids, types, mask in zip(batch.input_ids, batch.token_type_ids, batch.attention_mask, strict=True):
            real = [(int(i), int(t)) for i, t, m in zip(ids, types, mask, strict=True) if m and i >= FIRST_WORD_ID]
            query = {i for i, t in real if t == 0}
            logits.append(sum(1.0 for i, t in real if t == 1 and i in query))
        return np.asarray(logits, dtype=np.float64)

    def warm_up(self, most_tokens: int) -> None:
        ids = np.asarray([[2, 3, 3]], dtype=np.int64)  # [CLS] [SEP] [SEP]
        self.run(Batch(ids, np.ones_like(ids), np.zeros_like(ids)))


def word_overlap(query: str, document: str) -> float:
    """What :class:`StandInBackend` scores for a pair that fits whole, computed on the words
    rather than on token ids: the reference a test compares the server with."""
    known = set(STAND_IN_WORDS)
    query_words = {w for w in re.findall(r"\w+", query) if w in known}
    return float(sum(1 for w in re.findall(r"\w+", document) if w in query_words))


class GatedModel:
    """A model's ``run`` for the batcher's tests: a row's score is the sum of its token ids. Each
    call is counted as it comes in (:attr:`entered`), then waits until :attr:`gate` is open
    (from the start, unless ``held``), then keeps its batch (:attr:`batches`), so that a test can
    hold the model busy and wait for exactly the state it needs."""

    def __init__(self, held: bool = False) -> None:
        self.gate = threading.Event()
        if not held:
            self.gate.set()
        self.entered = 0
        self.batches: list[Batch] = []
        self._changed = threading.Condition()

    def __call__(self, batch: Batch) -> np.ndarray:
        with self._changed:
            self.entered += 1
            self._changed.notify_all()
        self.gate.wait(10)
        with self._changed:
            self.batches.append(batch)
            self._changed.notify_all()
        return (batch.input_ids * batch.attention_mask).sum(axis=1).astype(float)

    def block_until(self, condition: Callable[[GatedModel], bool], timeout: float = 10.0) -> None:
        """Blocks this thread (an event loop kept busy on purpose) until ``condition(self)``;
        fails after ``timeout``."""
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), timeout), "the model did not get there"
