"""The model families the converter knows: one module each, registered here.

A family (:class:`~rerank.converters.families.base.ModelFamily`) declares how its checkpoints
and GGUF files are recognised and read, its graph, its reference and its catalog entries. The
source readers (:mod:`rerank.converters.hf_checkpoint`, :mod:`rerank.converters.gguf_source`),
the pipeline (:mod:`rerank.converters.convert`) and the catalog ask this registry instead of
knowing any family by name. Adding a family is a new module and a line in :data:`FAMILIES`
(docs/development.md, "Adding a model family").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rerank.converters.families.bert as bert
import rerank.converters.families.gte as gte
import rerank.converters.families.jina_bert as jina_bert
import rerank.converters.families.qwen3 as qwen3
import rerank.converters.families.xlm_roberta as xlm_roberta
from rerank.converters.errors import CheckpointError, GgufError
from rerank.converters.families.base import CatalogEntry, CheckpointLayout, GgufLayout, ModelFamily
from rerank.converters.spec import LoadedModel

FAMILIES: tuple[ModelFamily, ...] = (
    xlm_roberta.FAMILY,
    bert.FAMILY,
    jina_bert.FAMILY,
    gte.FAMILY,
    qwen3.FAMILY,
)
"""Every family, in the order the catalog lists their models."""


def by_name(name: str) -> ModelFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"no model family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


def of(loaded: LoadedModel) -> ModelFamily:
    """The family of a model read by any source reader."""
    return by_name(loaded.spec.family)


def catalog_entries() -> list[CatalogEntry]:
    return [entry for family in FAMILIES for entry in family.catalog]


def checkpoint_layout(
    config: Mapping[str, Any], names: frozenset[str], where: str
) -> tuple[ModelFamily, CheckpointLayout]:
    """The family and layout of a checkpoint with this ``config.json`` and these tensor names.

    A layout's distinctive mark decides first (jina-reranker-v2 declares ``xlm-roberta`` and
    JinaBERT ``bert``); then ``model_type``; then, where the config names no ``model_type``,
    ``architectures``. Two layouts that both claim the checkpoint at the same step are refused
    rather than guessed between."""
    layouts = [(family, layout) for family in FAMILIES for layout in family.checkpoints]
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise CheckpointError(f"{where}/config.json: model_type is {model_type!r}; expected a name")
    model_type = (model_type or "").lower()
    architectures = config.get("architectures")
    declared = set(architectures) if isinstance(architectures, list) else set()
    steps = (
        [(f, layout) for f, layout in layouts if layout.mark is not None and layout.mark(config, names)],
        [(f, layout) for f, layout in layouts if model_type in layout.model_types],
        [(f, layout) for f, layout in layouts if not model_type and declared & set(layout.architectures)],
    )
    for found in steps:
        if len(found) == 1:
            return found[0]
        if found:
            claimed = ", ".join(layout.name for _, layout in found)
            raise CheckpointError(f"{where}: the checkpoint looks like several layouts ({claimed}); none is certain")
    supported = "; ".join(
        f"{layout.name} (model_type {', '.join(layout.model_types)})" if layout.model_types else layout.name
        for _, layout in layouts
    )
    raise CheckpointError(
        f"{where}: unsupported model_type {model_type!r} (architectures {architectures}); supported: {supported}"
    )


def gguf_layout(architecture: str, tokenizer_model: str, where: str) -> tuple[ModelFamily, GgufLayout]:
    """The family and layout of a GGUF with this ``general.architecture`` and ``tokenizer.ggml.model``:
    the layout that names the tokenizer model, else the one of that architecture that names none."""
    candidates = [
        (family, layout) for family in FAMILIES for layout in family.ggufs if layout.architecture == architecture
    ]
    for found in (
        [(f, layout) for f, layout in candidates if tokenizer_model in layout.tokenizer_models],
        [(f, layout) for f, layout in candidates if not layout.tokenizer_models],
    ):
        if found:
            return found[0]
    known = sorted({layout.architecture for family in FAMILIES for layout in family.ggufs})
    raise GgufError(f"{where}: architecture {architecture!r} is not a supported reranker ({', '.join(known)})")
