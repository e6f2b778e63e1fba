"""Reads a reranker GGUF (llama.cpp / GPUStack builds) into canonical weights and a tokenizer.

Which architectures exist (``general.architecture``, and where one serves several families,
``tokenizer.ggml.model``), how each is read and how its tokenizer is rebuilt is the families'
business (:mod:`rerank.converters.families`); this module opens the file through the bounded
reader (:mod:`rerank.converters.gguf_file`), hands it to the layout the registry names and checks
the result against the family's spec.

What a file cannot express is recorded in :attr:`LoadedModel.notes` and in the model folder
(for example a BERT pooler that llama.cpp's converter dropped).
"""

from __future__ import annotations

from collections.abc import Callable

from rerank.converters import families
from rerank.converters.bundle import SourceBundle
from rerank.converters.errors import GgufError
from rerank.converters.families.base import GgufLayout, check_finite
from rerank.converters.gguf_file import GgufFile
from rerank.converters.spec import LoadedModel
from rerank.service.model_folder import file_sha256


def _read(f: GgufFile) -> tuple[GgufLayout, LoadedModel]:
    tokenizer_model = f.metadata.get("tokenizer.ggml.model", "")
    family, layout = families.gguf_layout(f.architecture, str(tokenizer_model), str(f.path))
    read = layout.read(f)
    family.check(read.spec, read.weights, str(f.path), GgufError)
    check_finite(read.weights, str(f.path), GgufError)
    loaded = LoadedModel(
        spec=read.spec,
        weights=read.weights,
        source=str(f.path),
        source_format="gguf",
        notes=read.notes,
        files_sha256={f.path.name: file_sha256(f.path)},
        source_dtype=f.dominant_type().lower(),
        layout="gguf",
    )
    return layout, loaded


def load_gguf(f: GgufFile) -> LoadedModel:
    """Reads the opened GGUF ``f`` into a :class:`LoadedModel` (dequantised float32 weights)."""
    return _read(f)[1]


def load_gguf_bundle(f: GgufFile, progress: Callable[[str], None] = print) -> SourceBundle:
    """A :class:`SourceBundle` for an opened GGUF file: weights plus the tokenizer rebuilt from
    its metadata."""
    layout, loaded = _read(f)
    progress(f"gguf: {f.architecture}, {loaded.spec.num_layers} layers, {f.dominant_type()}; rebuilding the tokenizer")
    if f.duplicate_keys:
        progress(f"gguf: note: duplicate metadata keys {sorted(set(f.duplicate_keys))}: the first value is used")
    for note in loaded.notes:
        progress(f"gguf: note: {note}")
    try:
        tokenizer = layout.tokenizer(f.metadata)
    except GgufError as exc:
        raise GgufError(f"{f.path}: {exc}") from exc
    return SourceBundle(loaded=loaded, folder=None, tokenizer=tokenizer)
