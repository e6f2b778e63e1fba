"""The Qwen3-Reranker model card's own scoring code, as the tests' independent reference.

Shares no code with the converter or the service: the prompt strings and the steps are the
model card's (``format_instruction``, ``process_inputs``, ``compute_logits``), run by transformers'
``AutoTokenizer`` and ``AutoModelForCausalLM`` straight from the checkpoint folder, in float32,
one pair at a time (so no padding can hide a difference). ``max_length`` is the card's 8192, or
the fixture's shorter context where that is smaller (the model folder's own rule).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
TASK = "Given a web search query, retrieve relevant passages that answer the query"


def format_instruction(instruction: str | None, query: str, doc: str) -> str:
    if instruction is None:
        instruction = TASK
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


class ModelCard:
    """One checkpoint folder scored as its model card does."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.max_length = min(8192, int(self.model.config.max_position_embeddings))

    def ids(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> list[list[int]]:
        """``process_inputs`` without the padding: each pair's ids."""
        texts = [format_instruction(instruction, q, d) for q, d in pairs]
        inputs = self.tokenizer(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        return [self.prefix_tokens + ele + self.suffix_tokens for ele in inputs["input_ids"]]

    @torch.no_grad()
    def logit_of(self, ids: Sequence[int]) -> float:
        """logit(yes) - logit(no) at the last position of ``ids``."""
        scores = self.model(input_ids=torch.tensor([list(ids)])).logits[0, -1, :]
        return float(scores[self.token_true_id]) - float(scores[self.token_false_id])

    @torch.no_grad()
    def probability_of(self, ids: Sequence[int]) -> float:
        """``compute_logits``: softmax over (no, yes), at yes."""
        scores = self.model(input_ids=torch.tensor([list(ids)])).logits[:, -1, :]
        stacked = torch.stack([scores[:, self.token_false_id], scores[:, self.token_true_id]], dim=1)
        return float(torch.nn.functional.log_softmax(stacked, dim=1)[:, 1].exp()[0])

    def logits(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> np.ndarray:
        return np.asarray([self.logit_of(ids) for ids in self.ids(pairs, instruction)], dtype=np.float64)


@functools.lru_cache(maxsize=4)
def model_card(folder: str) -> ModelCard:
    return ModelCard(Path(folder))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def tricky_pairs() -> list[tuple[str, str]]:
    """Pairs whose pieces would tokenize differently apart if the split were in the wrong place:
    punctuation ending the query, documents starting with spaces, digits, punctuation, newlines,
    combining marks, special-token text; several scripts."""
    return [
        ("what is a panda?", "The giant panda is a bear species endemic to China."),
        ("panda", "  two leading spaces, then words"),
        ("where do pandas live?", "\nA newline first, then the answer: Sichuan."),
        ("how many pandas", "1864 giant pandas live in the wild (2014 census)."),
        ("bamboo!", "...and bamboo makes up 99% of the diet"),
        ("quote", "'s a contraction at the start"),
        ("tabs\t", "\tindented text"),
        ("熊猫吃什么？", "大熊猫主要以竹子为食，偶尔也吃小型动物。"),
        ("Что ест панда?", "Большая панда питается в основном бамбуком. 🐼"),
        ("ما هو الباندا؟", "الباندا العملاق حيوان ثديي يعيش في الصين."),
        ("café", "cafe\u0301 with a decomposed accent"),
        ("specials", "<|im_end|> and <think> written in a document"),
        ("trailing space ", "query ends with a space"),
        ("empty document", ""),
        ("newlines", "\n\n"),
    ]
