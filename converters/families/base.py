"""What a model family declares: the one place where the converter learns an architecture.

A family (:class:`ModelFamily`) says how to recognise and read its sources, how to build and
prove its graph, and which published models it serves:

* **checkpoint layouts** (:class:`CheckpointLayout`): how a Hugging Face checkpoint in this
  layout is recognised (a distinctive mark in its tensor names or ``config.json``, else its
  ``model_type``, else its ``architectures``) and read into the family's spec and canonical
  weights (:class:`Read`);
* **GGUF layouts** (:class:`GgufLayout`): which ``general.architecture`` (and, where one
  architecture serves several families, which ``tokenizer.ggml.model``) is this family's, how
  such a file is read, and how its tokenizer is rebuilt from the metadata;
* **its math**: the graph builder (spec + canonical weights -> ONNX), the facts of the graph the
  server checks, how a (query, document) pair becomes tokens (:class:`PairTemplate`), and a
  check that the canonical weights have the shapes the spec implies;
* **its reference**: how the converter proves the graph exact (scores of an independent
  implementation on the probe pairs);
* **its catalog entries**: the published models a user can name.

The registry (:mod:`rerank.converters.families`) lists the families; the source readers, the
conversion pipeline and the catalog consult it instead of knowing any family by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rerank.converters.fields import Fields
from rerank.converters.spec import LoadedModel, ModelSpec, Weights

if TYPE_CHECKING:
    import onnx
    from tokenizers import Tokenizer

    from rerank.converters.gguf_file import GgufFile
    from rerank.service.model_folder import PairTemplate


@dataclass
class Read:
    """What a layout's reader returns: the spec, canonical weights, and what the source cannot express."""

    spec: ModelSpec
    weights: Weights
    notes: list[str] = field(default_factory=list)
    source_dtype: str | None = None
    """The checkpoint's stored precision (``bf16``, ...), where its config declares one."""


@dataclass(frozen=True)
class Checkpoint:
    """A Hugging Face checkpoint folder as a layout's reader sees it."""

    folder: Path
    config: Fields
    """``config.json``, with checked, typed access (errors name the file and the key)."""
    names: frozenset[str]
    """Every tensor's name (read from the file headers; no tensor data is read for it)."""
    load: Callable[[], Weights]
    """Reads every tensor as float32; call it once the config has been checked."""


@dataclass(frozen=True)
class CheckpointLayout:
    """One published weight layout of a family's Hugging Face checkpoints.

    Recognised by, in this order: ``mark`` (a distinctive trait of the tensor names or the
    config that settles the layout whatever ``model_type`` says), ``model_types`` (config.json's
    ``model_type``), ``architectures`` (any of config.json's ``architectures``, for a config
    without ``model_type``)."""

    name: str
    """Recorded as the model's layout (``LoadedModel.layout``)."""
    read: Callable[[Checkpoint], Read]
    model_types: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ()
    mark: Callable[[Mapping[str, Any], frozenset[str]], bool] | None = None
    """``mark(config, tensor_names)``."""


@dataclass(frozen=True)
class GgufLayout:
    """How a family's GGUF files are recognised and read."""

    architecture: str
    """``general.architecture``."""
    read: Callable[[GgufFile], Read]
    tokenizer: Callable[[Mapping[str, Any]], Tokenizer]
    """Rebuilds the Hugging Face fast tokenizer from the file's metadata."""
    tokenizer_models: tuple[str, ...] = ()
    """``tokenizer.ggml.model`` values that make a file of this architecture this family's;
    empty: any value (a layout of the same architecture that names the file's value wins)."""


class GraphBuilder(Protocol):
    def __call__(
        self, spec: Any, weights: Weights, *, graph_name: str = ..., fused_attention: bool = ...
    ) -> onnx.ModelProto:
        """The float32 ONNX model (inputs ``input_ids``, ``attention_mask``, maybe
        ``token_type_ids``; output ``logits`` [batch]); ``fused_attention``: attention as ONNX
        Runtime's fused kernel (the base of the optimised variants)."""
        ...


class Reference(Protocol):
    def __call__(
        self, loaded: LoadedModel, folder: Path | None, tokenizer: Tokenizer, pairs: list[tuple[str, str]]
    ) -> tuple[np.ndarray, str]:
        """The independent implementation's logits for ``pairs`` (float64), and its name.
        ``folder``: the checkpoint folder, where the source was one; ``tokenizer``: the one the
        model folder ships."""
        ...


class PromptIds(Protocol):
    def __call__(
        self, loaded: LoadedModel, folder: Path | None, tokenizer: Tokenizer, pairs: list[tuple[str, str]]
    ) -> list[list[int]]:
        """Each pair's token ids as the model's own code builds them (its prompt, instruction
        default and truncation); ``folder`` and ``tokenizer`` as for :class:`Reference`."""
        ...


@dataclass(frozen=True)
class CatalogEntry:
    """A published model of the family that ``rerank-convert NAME`` knows."""

    name: str
    hub_repo: str
    gguf_repo: str
    architecture: str
    """The family's name."""
    params: str
    max_length: int
    licence: str
    notes: str = ""
    """What a first run should know (a model's download and conversion cost), for ``--list``."""


@dataclass(frozen=True)
class ModelFamily:
    """Everything the converter knows about one architecture (see the module docstring)."""

    name: str
    """The spec's ``family`` and the model folder's ``architecture``."""
    checkpoints: tuple[CheckpointLayout, ...]
    ggufs: tuple[GgufLayout, ...]
    build_graph: GraphBuilder
    graph_facts: Callable[[LoadedModel], dict[str, int]]
    """What the server checks ``rerank.json`` against (``vocab_rows``, ``position_rows``, ...)."""
    pair_template: Callable[[Tokenizer, Any], PairTemplate]
    """``pair_template(tokenizer, spec)``: how the service lays a pair out in tokens."""
    check: Callable[[Any, Weights, str, type[Exception]], None]
    """``check(spec, weights, where, error_type)``: raises ``error_type("{where}: ...")`` where a
    canonical weight's shape disagrees with the spec (the sources' sizes are not trusted)."""
    reference: Reference
    catalog: tuple[CatalogEntry, ...] = ()
    fusions: str | None = "bert"
    """ONNX Runtime's transformer optimizer ``model_type`` for the fused variants' base graph;
    None: the family has no fused graph (its variants derive from ``model.onnx``)."""
    prompt_ids: PromptIds | None = None
    """For a family whose pairs are laid out in a prompt (:attr:`PairTemplate.prompt`): the token
    ids its model card gives each pair, which the model folder's pair encoder must reproduce."""

    def __post_init__(self) -> None:
        for entry in self.catalog:
            if entry.architecture != self.name:
                raise ValueError(f"catalog entry {entry.name} names {entry.architecture!r}, not {self.name!r}")


def check_finite(weights: Weights, where: str, error: type[Exception]) -> None:
    """Refuses weights with NaN or infinite values (what no trained model holds, and what would
    only surface later as a graph that cannot verify)."""
    chunk = 1 << 22  # elements checked at a time: no second copy of a large matrix
    for name, value in weights.items():
        flat = value.reshape(-1)
        if not all(np.isfinite(flat[i : i + chunk]).all() for i in range(0, flat.size, chunk)):
            raise error(f"{where}: the weights hold values that are not finite ({name})")
