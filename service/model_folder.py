"""The model folder: one directory per served model, Triton-style, written by rerank-convert.

Layout::

    models/<name>/
        rerank.json        this file's :class:`ModelFolderConfig`
        tokenizer.json     a Hugging Face ``tokenizers`` file
        model.onnx         float32 reference graph (its weights in ``model.onnx.data`` beside it when over 64 MiB)
        model.*.onnx       optional optimised variants, listed in ``rerank.json``

The service reads only this folder: no network, no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

CONFIG_NAME = "rerank.json"
FORMAT_VERSION = 3
PROMPT_FORMAT = 4
"""The format of a folder whose template has a prompt (:class:`PromptTemplate`): a server that
reads only formats up to 3 would score the bare query and document, so it must refuse the folder."""
READABLE_FORMATS = (1, 2, 3, 4)
"""Format 1 folders (converted before checksums and probe scores were recorded) still load;
format 2 folders (before variants named their runtime) load as ONNX Runtime variants."""

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
RUNTIMES = (ONNXRUNTIME, OPENVINO)
GATE_VERSION = 2
"""``Variant.gate["version"]`` of the per-query gate on ``rerank.converters.gate_probes``' ~300 pairs
(version 1, unversioned: Spearman over the 13 conversion probes). Only a variant that passed a
gate of this version is chosen without being asked for."""
BF16_UNTIL = "rerank_bf16_until"
"""The tensor at which a split ``bf16-mixed`` graph changes precision: what computes it runs in
bf16, what reads it in f32 (:mod:`rerank.service.backends.openvino`)."""
INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS = "input_ids", "attention_mask", "token_type_ids"
PREFIX_IDS, PREFIX_MASK, PREFIX_ROW = "prefix_ids", "prefix_mask", "prefix_row"
"""A model folder's graph inputs. A decoder's graph may read a shared head apart (the ``prefix_*``
inputs, ``graph.shared_prefix``): the rows' common head once, each row after it
(:func:`rerank.service.backends.base.graph_feed`)."""


@dataclass(frozen=True)
class PromptTemplate:
    """The text an LLM reranker reads around the query and the document (Qwen3-Reranker).

    The query part is ``query`` with ``{instruction}`` and ``{query}`` filled in, the document
    part ``document`` with ``{document}``; each is tokenized on its own, without special tokens,
    and the two are placed between the template's prefix and suffix token ids. The split is
    chosen where the tokenizer's pre-tokenizer always splits, so the ids are those of the whole
    text tokenized at once (the converter checks them against the model's own tokenization).
    """

    query: str
    document: str
    default_instruction: str
    """Used when a request names no instruction."""
    prefix_text: str = ""
    suffix_text: str = ""
    """The text of the prefix and suffix token ids, for people reading the folder."""

    def query_text(self, query: str, instruction: str | None) -> str:
        instruction = self.default_instruction if instruction is None else instruction
        return self.query.format(instruction=instruction, query=query)

    def document_text(self, document: str) -> str:
        return self.document.format(document=document)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptTemplate:
        prompt = cls(
            query=str(data["query"]),
            document=str(data["document"]),
            default_instruction=str(data["default_instruction"]),
            prefix_text=str(data.get("prefix_text", "")),
            suffix_text=str(data.get("suffix_text", "")),
        )
        try:  # a broken template is refused with the folder, not on the first request
            prompt.query_text("", None), prompt.document_text("")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"the prompt template does not format ({type(exc).__name__}: {exc})") from None
        return prompt


@dataclass(frozen=True)
class PairTemplate:
    """How a (query, document) pair becomes one token sequence.

    Each special token is ``(token_id, token_type_id)``. XLM-R: ``<s> q </s></s> d </s>``, all
    type 0. BERT: ``[CLS] q [SEP] d [SEP]`` with the document and its ``[SEP]`` of type 1. An LLM
    reranker (Qwen3-Reranker): its prompt's fixed prefix and suffix, and a :attr:`prompt` that
    says how the query (with an instruction) and the document are written between them.
    """

    prefix: tuple[tuple[int, int], ...]
    middle: tuple[tuple[int, int], ...]
    suffix: tuple[tuple[int, int], ...]
    query_type: int = 0
    document_type: int = 0
    pad_id: int = 0
    prompt: PromptTemplate | None = None
    """Set for models that read a prompt, and only those take an instruction."""

    @property
    def special_count(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @property
    def timing_token(self) -> int:
        """A token every vocabulary of this template has (its first special token, else the pad
        token): what batches timed or warmed up at start-up are filled with (their speed does
        not depend on the tokens)."""
        return self.prefix[0][0] if self.prefix else self.pad_id

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairTemplate:
        def pairs(items: list[list[int]]) -> tuple[tuple[int, int], ...]:
            return tuple((int(a), int(b)) for a, b in items)

        prompt = data.get("prompt")
        return cls(
            pairs(data["prefix"]),
            pairs(data["middle"]),
            pairs(data["suffix"]),
            int(data.get("query_type", 0)),
            int(data.get("document_type", 0)),
            int(data.get("pad_id", 0)),
            PromptTemplate.from_json(prompt) if prompt is not None else None,
        )


@dataclass(frozen=True)
class Variant:
    """One ONNX graph of the model: the float32 reference or an optimised form of it."""

    file: str
    precision: str
    """``fp32``, ``bf16``, ``bf16-mixed`` (some matrix products in bf16), ``fp16`` or ``int8``."""
    device: str = "any"
    """Where it is meant to run: ``any``, ``cpu`` or ``cuda``."""
    fused: bool = False
    gate: dict[str, Any] = field(default_factory=dict)
    """Accuracy figures against fp32 on the probe set, recorded when the variant was written."""
    sha256: dict[str, str] = field(default_factory=dict)
    """SHA-256 of each file the variant reads (its graph, and external weights if any)."""
    probe_scores: list[float] = field(default_factory=list)
    """This variant's scores for :attr:`ModelFolderConfig.check_pairs`, at conversion."""
    runtime: str = ONNXRUNTIME
    """What runs it: ``onnxruntime`` (CPU or CUDA) or ``openvino`` (CPU)."""

    @property
    def exact(self) -> bool:
        """fp32: the model's own scores (within float rounding), whatever the runtime."""
        return self.precision == "fp32"

    @property
    def passed_gate(self) -> bool:
        """Passed the current gate (:data:`GATE_VERSION`) against fp32 when it was written."""
        return bool(self.gate.get("version") == GATE_VERSION and self.gate.get("passed"))


@dataclass(frozen=True)
class ModelFolderConfig:
    """Everything the service needs to know about a model besides its weights."""

    name: str
    architecture: str
    max_length: int
    template: PairTemplate
    type_ids_input: bool
    variants: dict[str, Variant]
    source: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    licence: str = ""
    opset: int = 17
    graph: dict[str, int] = field(default_factory=dict)
    """Facts of the graph the checks compare the rest with: ``vocab_rows`` (word embeddings),
    ``position_rows`` and ``position_offset`` (learned position tables, where the model has one);
    ``shared_prefix`` 1 where the graph reads a shared head (:data:`PREFIX_IDS`)."""
    check_pairs: list[tuple[str, str]] = field(default_factory=list)
    """A few (query, document) pairs whose scores each variant recorded (``probe_scores``)."""
    speed: dict[str, Any] = field(default_factory=dict)
    """The converter's timing of the CPU variants on its own CPU: ``cpu`` (model and feature
    flags), ``batch`` ([pairs, length]), ``threads`` and ``milliseconds`` per variant. A server
    on the same CPU chooses from it (the same choice on every replica and restart)."""
    format: int = FORMAT_VERSION

    @property
    def source_name(self) -> str:
        """The source's name for clients (a Hub repo id, a folder or file name), never a path."""
        name = self.source.get("name")
        if name:
            return str(name)
        return Path(str(self.source.get("ref", ""))).name

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["template"] = {
            "prefix": [list(p) for p in self.template.prefix],
            "middle": [list(p) for p in self.template.middle],
            "suffix": [list(p) for p in self.template.suffix],
            "query_type": self.template.query_type,
            "document_type": self.template.document_type,
            "pad_id": self.template.pad_id,
        }
        if self.template.prompt is not None:
            data["template"]["prompt"] = asdict(self.template.prompt)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelFolderConfig:
        if int(data.get("format", 0)) not in READABLE_FORMATS:
            raise ValueError(
                f"model folder format {data.get('format')!r} is not one of {READABLE_FORMATS}; reconvert the model"
            )
        variants = {k: Variant(**v) for k, v in data["variants"].items()}
        for key, variant in variants.items():
            if variant.runtime not in RUNTIMES:
                raise ValueError(f"variant {key!r}: unknown runtime {variant.runtime!r}; known: {', '.join(RUNTIMES)}")
        return cls(
            name=data["name"],
            architecture=data["architecture"],
            max_length=int(data["max_length"]),
            template=PairTemplate.from_json(data["template"]),
            type_ids_input=bool(data["type_ids_input"]),
            variants=variants,
            source=data.get("source", {}),
            spec=data.get("spec", {}),
            verification=data.get("verification", {}),
            notes=tuple(data.get("notes", ())),
            licence=data.get("licence", ""),
            opset=int(data.get("opset", 17)),
            graph={k: int(v) for k, v in data.get("graph", {}).items()},
            check_pairs=[(str(q), str(d)) for q, d in data.get("check_pairs", [])],
            speed=dict(data.get("speed", {})),
            format=int(data["format"]),
        )


def read_model_folder(folder: Path) -> ModelFolderConfig:
    """Reads and checks ``folder/rerank.json``; raises ``ValueError`` naming what is wrong."""
    path = folder / CONFIG_NAME
    if not path.exists():
        raise ValueError(f"{folder}: no {CONFIG_NAME}; is this a folder written by rerank-convert?")
    config = ModelFolderConfig.from_json(json.loads(path.read_text()))
    for required in ("tokenizer.json",):
        if not (folder / required).exists():
            raise ValueError(f"{folder}: missing {required}")
    for key, variant in config.variants.items():
        if not (folder / variant.file).exists():
            raise ValueError(f"{folder}: variant {key!r} lists {variant.file}, which is missing")
    return config


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 4 MiB chunks (model files reach GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_config(folder: Path, config: ModelFolderConfig) -> Path:
    path = folder / CONFIG_NAME
    path.write_text(json.dumps(config.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def find_model_folders(root: Path) -> list[Path]:
    """Every direct subfolder of ``root`` that holds a ``rerank.json``, sorted by name."""
    return sorted(p.parent for p in root.glob(f"*/{CONFIG_NAME}"))


def template_from_tokenizer(tokenizer: Tokenizer, pad_id: int) -> PairTemplate:
    """Reads the pair template off a tokenizer's own post-processor.

    Encodes a two-word pair with special tokens and sorts each token into prefix, middle or
    suffix by which sequence it belongs to (special tokens belong to none).
    """
    enc = tokenizer.encode("a", "b", add_special_tokens=True)
    plain = (tokenizer.encode("a", add_special_tokens=False), tokenizer.encode("b", add_special_tokens=False))
    parts: dict[str, list[tuple[int, int]]] = {"prefix": [], "middle": [], "suffix": []}
    seq_types = {0: 0, 1: 0}
    seen: set[int] = set()
    for token_id, type_id, seq in zip(enc.ids, enc.type_ids, enc.sequence_ids, strict=True):
        if seq is None:
            where = "prefix" if not seen else ("middle" if seen == {0} else "suffix")
            parts[where].append((token_id, type_id))
        else:
            seen.add(seq)
            seq_types[seq] = type_id
    if len(enc.ids) != sum(len(v) for v in parts.values()) + len(plain[0].ids) + len(plain[1].ids):
        raise ValueError("the tokenizer's pair encoding is not prefix + query + middle + document + suffix")
    return PairTemplate(
        tuple(parts["prefix"]), tuple(parts["middle"]), tuple(parts["suffix"]), seq_types[0], seq_types[1], pad_id
    )
