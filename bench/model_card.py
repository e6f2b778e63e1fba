"""Qwen3-Reranker as its model card runs it: transformers' ``AutoModelForCausalLM``, in this process.

The card's code path: the tokenizer with ``padding_side="left"``; each pair's text formatted and
tokenized without padding, cut to ``max_length - len(prefix) - len(suffix)`` and put between the
prefix and suffix ids (the card's ``process_inputs``, shared with the converter's reference:
:func:`rerank.converters.qwen3.reference.model_card_ids`); the batch padded (``tokenizer.pad``)
and run whole; the ``yes`` and ``no`` logits at the last position make the score, the card's
``softmax([no, yes])[yes]`` (raw: ``logit(yes) - logit(no)``, what the accuracy probes read). A
request's pairs are one batch, as the card scores its pairs.

``hf-fp32`` loads the checkpoint in float32, ``hf-bf16`` in bfloat16 (``dtype=``, PyTorch's
own bf16 kernels). :func:`reference` is the fp32 model scoring each pair alone (no padding):
the accuracy probes' reference for a decoder model.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from bench.accuracy import Probe, flatten
from bench.models import BenchModel
from bench.peers import THREADS, Peer

DTYPES = ("fp32", "bf16")
NAMES = tuple(f"hf-{dtype}" for dtype in DTYPES)


class ModelCard:
    """The checkpoint under ``AutoModelForCausalLM`` at ``dtype``, scoring as the card does."""

    def __init__(self, checkpoint: Path, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rerank.converters.qwen3.prompt import MODEL_CARD_MAX_LENGTH, NO, YES

        torch.set_num_threads(THREADS)
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), padding_side="left")
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        self.model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch_dtype).eval()
        self.yes = self.tokenizer.convert_tokens_to_ids(YES)
        self.no = self.tokenizer.convert_tokens_to_ids(NO)
        self.max_length = MODEL_CARD_MAX_LENGTH

    def no_yes(self, query: str, documents: list[str], batch: int | None = None) -> Any:
        """The ``no`` and ``yes`` logits at the last position, one row per document (a float32
        tensor), ``batch`` pairs per forward pass (None: all of them, as the card)."""
        import torch

        from rerank.converters.qwen3.reference import model_card_ids

        ids = model_card_ids(self.tokenizer, [(query, d) for d in documents], self.max_length)
        rows = []
        step = batch or max(1, len(ids))
        for start in range(0, len(ids), step):
            inputs = self.tokenizer.pad(
                {"input_ids": ids[start : start + step]}, padding=True, return_tensors="pt", max_length=self.max_length
            )
            with torch.inference_mode():
                last = self.model(**inputs).logits[:, -1, :]
            rows.append(torch.stack([last[:, self.no], last[:, self.yes]], dim=1).float())
        return torch.cat(rows)

    def logits(self, query: str, documents: list[str], batch: int | None = None) -> list[float]:
        """``logit(yes) - logit(no)`` per document (the raw score)."""
        pair = self.no_yes(query, documents, batch)
        return (pair[:, 1] - pair[:, 0]).tolist()

    def scores(self, query: str, documents: list[str]) -> list[float]:
        """The card's ``compute_logits``: ``log_softmax([no, yes])[:, 1].exp()`` per document."""
        import torch

        return torch.nn.functional.log_softmax(self.no_yes(query, documents), dim=1)[:, 1].exp().tolist()


class ModelCardPeer(Peer):
    """:class:`ModelCard` as a peer (``hf-fp32``, ``hf-bf16``); calls are serialised, as a
    one-worker server would run them (two would each start 2 threads on the same 2 cores)."""

    def __init__(self, model: BenchModel, dtype: str) -> None:
        self.model = model
        self.name, self.precision = f"hf-{dtype}", dtype
        self._card: ModelCard | None = None
        self._lock = threading.Lock()
        self._baseline = 0

    def start(self) -> None:
        import psutil

        self._baseline = psutil.Process().memory_info().rss
        self._card = ModelCard(self.model.checkpoint, self.precision)

    def stop(self) -> None:
        self._card = None

    def score(self, query: str, documents: tuple[str, ...]) -> None:
        assert self._card is not None
        with self._lock:
            got = self._card.scores(query, list(documents))
        if len(got) != len(documents):
            raise RuntimeError(f"{self.name}: {len(got)} scores for {len(documents)} documents")

    def logits(self, query: str, documents: list[str]) -> list[float]:
        assert self._card is not None
        with self._lock:
            return self._card.logits(query, documents)

    def pids(self) -> list[int]:
        return [os.getpid()]

    def rss_baseline(self) -> int:
        return self._baseline

    def facts(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"versions": {p: version(p) for p in ("transformers", "torch")}, "batch": "the whole request"}


def reference(checkpoint: Path, probe_set: list[Probe]) -> list[float]:
    """The probes' reference logits: the card's scoring in fp32, each pair alone (no padding)."""
    card = ModelCard(checkpoint, "fp32")
    return flatten(probe_set, lambda query, documents: card.logits(query, documents, batch=1))[0]
