"""A tolerant GGUF reader: decoded metadata plus dequantised float32 tensors.

Published reranker GGUFs have quirks that the ``gguf`` package's reader refuses or mis-reads:
duplicate metadata keys (the first value wins here, as in llama.cpp's loader) and a
``precompiled_charsmap`` stored as a base64 string instead of a byte array (handled by the
tokenizer rebuild). Every quantisation that ``gguf.quants`` can dequantise is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.gguf_reader import ReaderField
from gguf.quants import dequantize

from rerank.converters.errors import GgufError


class _TolerantReader(GGUFReader):
    """Keeps the first of duplicated metadata keys instead of raising."""

    duplicates: list[str]

    def _push_field(self, field: ReaderField, skip_sum: bool = False) -> int:
        if field.name in self.fields:
            self.__dict__.setdefault("duplicates", []).append(field.name)
            return 0 if skip_sum else sum(int(part.nbytes) for part in field.parts)
        return super()._push_field(field, skip_sum)


def _decode(field: ReaderField) -> Any:
    main = field.types[0] if field.types else None
    if main == GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data]
        values = [field.parts[i] for i in field.data]
        if not values:
            return np.zeros(0)
        return np.concatenate([np.asarray(v).reshape(-1) for v in values])
    if main == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="surrogateescape")
    value = field.parts[field.data[0]]
    scalar = np.asarray(value).reshape(-1)[0]
    if main == GGUFValueType.BOOL:
        return bool(scalar)
    return scalar.item()


@dataclass
class GgufFile:
    """Metadata (decoded to Python values) and tensor access for one GGUF file."""

    path: Path
    metadata: dict[str, Any]
    duplicate_keys: list[str]
    _reader: GGUFReader

    @classmethod
    def open(cls, path: Path) -> GgufFile:
        if not path.is_file():
            raise GgufError(f"{path}: no such GGUF file")
        try:
            reader = _TolerantReader(str(path), "r")
        except (ValueError, OSError) as exc:  # what the gguf package raises for a file it cannot parse
            raise GgufError(f"{path}: not a readable GGUF file ({exc})") from exc
        metadata = {name: _decode(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}
        return cls(path, metadata, list(getattr(reader, "duplicates", [])), reader)

    @property
    def architecture(self) -> str:
        return str(self.metadata["general.architecture"])

    def key(self, suffix: str, default: Any = None) -> Any:
        """``{architecture}.{suffix}``."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    def parameter_count(self) -> int:
        """Elements in every tensor (read from the tensor index; nothing is dequantised)."""
        return sum(int(t.n_elements) for t in self._reader.tensors)

    def tensor_types(self) -> dict[str, str]:
        return {t.name: GGMLQuantizationType(t.tensor_type).name for t in self._reader.tensors}

    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor dequantised to float32, in PyTorch orientation ([rows, columns])."""
        out: dict[str, np.ndarray] = {}
        for t in self._reader.tensors:
            qtype = GGMLQuantizationType(t.tensor_type)
            if qtype == GGMLQuantizationType.BF16:
                raw = np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16
                array = raw.view(np.float32)
            else:
                array = dequantize(np.asarray(t.data), qtype)
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            out[t.name] = np.asarray(array, dtype=np.float32).reshape(shape)
        return out

    def dominant_type(self) -> str:
        """The quantisation of the large matrices (what a user calls the file's precision)."""
        counts: dict[str, int] = {}
        for t in self._reader.tensors:
            if len(t.shape) >= 2:
                name = GGMLQuantizationType(t.tensor_type).name
                counts[name] = counts.get(name, 0) + int(t.n_elements)
        return max(counts, key=counts.get) if counts else "F32"
