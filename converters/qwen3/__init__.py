"""The Qwen3-Reranker family (0.6B, 4B, 8B): a decoder-only LLM that scores a pair by its
``yes``/``no`` logits at the end of a fixed prompt.

The family's one entry point for the shared pipeline (each of these is called from one marked
branch of :mod:`rerank.converters.hf_checkpoint`, :mod:`~rerank.converters.sources`,
:mod:`~rerank.converters.convert` and :mod:`~rerank.converters.catalog`):

* :func:`matches_checkpoint` / :func:`load_checkpoint`: a checkpoint folder
  (:mod:`.checkpoint`);
* :func:`matches_gguf` / :func:`load_gguf_bundle`: a GGUF file (:mod:`.gguf`);
* :func:`is_family`: whether a loaded model is one of this family;
* :func:`pair_template`, :func:`build_graph`: the model folder's template (with its prompt,
  :mod:`.prompt`) and graph (:mod:`.graph`);
* :func:`verify`: the model card's scores and token ids for the probe pairs (:mod:`.reference`);
* :mod:`.catalog`: the published models (read by :mod:`rerank.converters.catalog`).

Modules: :mod:`.spec` (facts and weight names), :mod:`.prompt`, :mod:`.checkpoint`,
:mod:`.gguf` (weights and the Qwen2 BPE tokenizer), :mod:`.graph`, :mod:`.reference`, :mod:`.catalog`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerank.converters.qwen3.spec import FAMILY

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from tokenizers import Tokenizer

    from rerank.converters.bundle import SourceBundle
    from rerank.converters.gguf_file import GgufFile
    from rerank.converters.spec import LoadedModel
    from rerank.service.model_folder import ModelFolderConfig, PairTemplate

__all__ = [
    "FAMILY",
    "build_graph",
    "is_family",
    "load_checkpoint",
    "load_gguf_bundle",
    "matches_checkpoint",
    "matches_gguf",
    "pair_template",
    "verify",
]


def matches_checkpoint(config: dict[str, Any]) -> bool:
    from rerank.converters.qwen3.checkpoint import is_qwen3

    return is_qwen3(config)


def load_checkpoint(folder: Path, config: dict[str, Any], source: str) -> LoadedModel:
    from rerank.converters.qwen3.checkpoint import load_checkpoint as load

    return load(folder, config, source)


def matches_gguf(f: GgufFile) -> bool:
    from rerank.converters.qwen3.gguf import is_qwen3

    return is_qwen3(f)


def load_gguf_bundle(f: GgufFile, progress: Callable[[str], None] = print) -> SourceBundle:
    from rerank.converters.qwen3.gguf import load_gguf_bundle as load

    return load(f, progress)


def is_family(loaded: LoadedModel) -> bool:
    return loaded.spec.family == FAMILY


def pair_template(tokenizer: Tokenizer, pad_id: int) -> PairTemplate:
    from rerank.converters.qwen3.prompt import pair_template as template

    return template(tokenizer, pad_id)


def build_graph(loaded: LoadedModel, graph_name: str) -> onnx.ModelProto:
    from rerank.converters.qwen3.graph import build_graph as build

    return build(loaded.spec, loaded.weights, graph_name=graph_name)  # type: ignore[arg-type]


def verify(
    loaded: LoadedModel,
    source_folder: Path | None,
    tokenizer: Tokenizer,
    work: Path,
    config: ModelFolderConfig,
    pairs: Sequence[tuple[str, str]],
) -> tuple[np.ndarray, str]:
    """The model card's score logits for ``pairs`` and the reference's name, after checking that
    the model folder's pair encoder gives exactly the model card's token ids for each pair
    (:class:`~rerank.converters.errors.VerificationError` naming the first that differs)."""
    from rerank.converters.errors import VerificationError
    from rerank.converters.qwen3.reference import reference_scores
    from rerank.service.scoring import pair_ids

    scores, ids, name = reference_scores(loaded, source_folder, tokenizer, pairs)
    for n, (ours, theirs) in enumerate(zip(pair_ids(work, config, pairs), ids, strict=True)):
        if ours != theirs:
            at = next(
                (k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
            )
            raise VerificationError(
                f"probe #{n}: the model folder's tokens differ from the model card's at position {at} "
                f"({len(ours)} vs {len(theirs)} tokens). Nothing was written."
            )
    return scores, name
