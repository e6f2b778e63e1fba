"""The Qwen3-Reranker prompt, as its model card writes it, and its form in a model folder.

The model card scores a (query, document) pair as the model's next-token logits for ``yes``
and ``no`` after::

    PREFIX + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}" + SUFFIX

where PREFIX and SUFFIX are tokenized once, on their own, and the middle part per pair (cut
from its end to fit). The service cannot tokenize the middle per pair (one request's query is
shared by all its documents, and a long document is cut or windowed on its own), so the model
folder splits it where byte-level BPE's pre-tokenizer always splits anyway: after
``<Document>:``. That piece ends in punctuation followed by a space, which Qwen2's pre-tokenizer
regex never joins across, so ``tokens(query part) + tokens(" " + document)`` are the tokens of
the whole middle, for every query and document (the tests check this on awkward strings).
"""

from __future__ import annotations

from tokenizers import Tokenizer

from rerank.service.model_folder import PairTemplate, PromptTemplate

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
PREFIX = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MIDDLE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
"""The model card's per-pair text (its ``format_instruction``)."""

QUERY_PART = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"
DOCUMENT_PART = " {document}"
""":data:`MIDDLE` split after ``<Document>:`` (see the module docstring)."""

YES, NO = "yes", "no"
"""The two tokens whose logits make the score: ``logit(yes) - logit(no)``."""

MODEL_CARD_MAX_LENGTH = 8192
"""The model card's ``max_length``: the longest prompt, prefix and suffix included."""


def middle(query: str, document: str, instruction: str | None = None) -> str:
    """The model card's per-pair text (``format_instruction``)."""
    return MIDDLE.format(
        instruction=DEFAULT_INSTRUCTION if instruction is None else instruction, query=query, doc=document
    )


def pair_template(tokenizer: Tokenizer, pad_id: int) -> PairTemplate:
    """The model folder's template: the prefix and suffix token ids as ``tokenizer`` gives them
    (alone, without special tokens added, as the model card computes them) and the prompt."""
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False).ids
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False).ids
    return PairTemplate(
        prefix=tuple((i, 0) for i in prefix),
        middle=(),
        suffix=tuple((i, 0) for i in suffix),
        pad_id=pad_id,
        prompt=PromptTemplate(
            query=QUERY_PART,
            document=DOCUMENT_PART,
            default_instruction=DEFAULT_INSTRUCTION,
            prefix_text=PREFIX,
            suffix_text=SUFFIX,
        ),
    )
