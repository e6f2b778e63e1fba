"""A bounded, tolerant GGUF reader: decoded metadata plus dequantised float32 tensors.

A GGUF file is untrusted input: every count and length in it is checked against the bytes that
remain and against sane limits (:data:`LIMITS`) before anything is sized by it, and a file that
breaks a rule is one :class:`~rerank.converters.errors.GgufError` naming the file, the byte
offset and the rule. The header, metadata and tensor index are parsed here in one pass (the
``gguf`` package's reader sizes its loops by the file's counts unchecked and keeps a numpy view
per array item); the ``gguf`` package still supplies the tensor types and the dequantisation.

Published reranker GGUFs have quirks that are tolerated: duplicate metadata keys (the first
value wins, as in llama.cpp's loader) and a ``precompiled_charsmap`` stored as a base64 string
instead of a byte array (handled by the tokenizer rebuild). Every quantisation that
``gguf.quants`` can dequantise is accepted.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize

from rerank.converters.errors import GgufError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class Limits:
    """What a GGUF may declare, far above any published model's needs."""

    tensors: int = 65_536
    keys: int = 65_536
    key_bytes: int = 65_535
    string_bytes: int = 64 * 1024 * 1024
    array_items: int = 64 * 1024 * 1024
    strings: int = 4 * 1024 * 1024
    """Strings in all metadata arrays together (a vocabulary plus its merges is well under 1 M)."""
    name_bytes: int = 63
    """Tensor names: llama.cpp's GGML_MAX_NAME (64) with its terminating NUL."""
    dims: int = 4
    alignment: int = 1024 * 1024


LIMITS = Limits()

_SCALARS: dict[int, str] = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}
_PLAIN_TYPES: dict[GGMLQuantizationType, str] = {
    GGMLQuantizationType.F32: "<f4",
    GGMLQuantizationType.F16: "<f2",
    GGMLQuantizationType.F64: "<f8",
}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor index, checked to lie inside the file."""

    name: str
    shape: tuple[int, ...]
    """Dimensions in GGUF order (fastest-varying first)."""
    qtype: GGMLQuantizationType
    offset: int
    """Absolute byte offset of the data in the file."""
    n_elements: int
    n_bytes: int


class _Cursor:
    """Reads the file front to back; every read is checked against the bytes that remain."""

    def __init__(self, data: mmap.mmap | bytes, where: str, limits: Limits) -> None:
        self.data, self.where, self.limits = data, where, limits
        self.size, self.pos = len(data), 0

    def fail(self, problem: str, at: int | None = None) -> GgufError:
        return GgufError(f"{self.where} {problem} (byte {self.pos if at is None else at})")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"{what} needs {n} bytes but the file ends {self.size - self.pos} bytes later")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def count(self, what: str, limit: int, item_bytes: int) -> int:
        """A u64 count of items of at least ``item_bytes`` each: at most ``limit``, and no more
        than the rest of the file can hold."""
        at = self.pos
        n = self.u64(what)
        if n > limit:
            raise self.fail(f"{what} is {n}; at most {limit} are accepted", at)
        if n * item_bytes > self.size - self.pos:
            raise self.fail(f"{what} is {n}, more than the {self.size - self.pos} bytes left can hold", at)
        return n

    def string_bytes(self, what: str, limit: int) -> bytes:
        at = self.pos
        n = self.u64(f"{what}'s length")
        if n > limit:
            raise self.fail(f"{what} is {n} bytes long; at most {limit} are accepted", at)
        self.need(n, what)
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return raw

    def name(self, what: str, limit: int) -> str:
        at = self.pos
        raw = self.string_bytes(what, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8", at) from None

    def text(self, what: str) -> str:
        return self.string_bytes(what, self.limits.string_bytes).decode("utf-8", errors="surrogateescape")

    def array(self, dtype: str, n: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * n
        self.need(size, what)
        values = np.frombuffer(self.data, dtype=dtype, count=n, offset=self.pos).copy()
        self.pos += size
        return values


def _value_type(cursor: _Cursor, what: str) -> GGUFValueType:
    at = cursor.pos
    raw = cursor.u32(f"{what}'s type")
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise cursor.fail(f"{what} has unknown value type {raw}", at) from None


class _Parser:
    """The header, metadata and tensor index of a GGUF (version 2 or 3, little-endian)."""

    def __init__(self, cursor: _Cursor) -> None:
        self.c = cursor
        self.strings = 0
        self.metadata: dict[str, Any] = {}
        self.types: dict[str, GGUFValueType] = {}
        self.duplicates: list[str] = []

    def header(self) -> tuple[int, int]:
        c = self.c
        c.need(4, "the magic number")
        if bytes(c.data[0:4]) != MAGIC:
            raise c.fail("it does not start with the GGUF magic number", 0)
        c.pos = 4
        version = c.u32("the version")
        if version & 0xFFFF == 0 and version:
            raise c.fail("a big-endian GGUF; only little-endian files are supported", 4)
        if version not in VERSIONS:
            raise c.fail(f"GGUF version {version} is not supported (only {' and '.join(map(str, VERSIONS))})", 4)
        tensors = c.count("the tensor count", c.limits.tensors, 8 + 4 + 8 + 4 + 8)
        keys = c.count("the metadata key count", c.limits.keys, 8 + 4)
        return tensors, keys

    def value(self, kind: GGUFValueType, what: str) -> Any:
        c = self.c
        if kind == GGUFValueType.STRING:
            return c.text(what)
        if kind == GGUFValueType.ARRAY:
            return self.array(what)
        scalar = c.array(_SCALARS[kind], 1, what)[0]
        return bool(scalar) if kind == GGUFValueType.BOOL else scalar.item()

    def array(self, what: str) -> Any:
        c = self.c
        item = _value_type(c, f"{what}'s items")
        if item == GGUFValueType.ARRAY:
            raise c.fail(f"{what} is an array of arrays, which no model file uses", c.pos - 4)
        if item == GGUFValueType.STRING:
            n = c.count(f"{what}'s item count", c.limits.array_items, 8)
            self.strings += n
            if self.strings > c.limits.strings:
                raise c.fail(f"the metadata arrays hold more than {c.limits.strings} strings", c.pos - 8)
            return [c.text(f"{what}[{i}]") for i in range(n)]
        dtype = _SCALARS[item]
        n = c.count(f"{what}'s item count", c.limits.array_items, np.dtype(dtype).itemsize)
        values = c.array(dtype, n, what)
        if item == GGUFValueType.BOOL:
            return values.astype(bool)
        return values if n else np.zeros(0)

    def keys(self, count: int) -> None:
        c = self.c
        for _ in range(count):
            key = c.name("a metadata key", c.limits.key_bytes)
            kind = _value_type(c, f"metadata {key!r}")
            value = self.value(kind, f"metadata {key!r}")
            if key in self.metadata:
                self.duplicates.append(key)
                continue
            self.metadata[key], self.types[key] = value, kind

    def alignment(self) -> int:
        value = self.metadata.get("general.alignment")
        if value is None:
            return DEFAULT_ALIGNMENT
        if self.types["general.alignment"] != GGUFValueType.UINT32 or not 0 < value <= self.c.limits.alignment:
            raise self.c.fail(f"general.alignment is {value!r}; expected a uint32 power of two", 0)
        if value & (value - 1):
            raise self.c.fail(f"general.alignment is {value}, not a power of two", 0)
        return int(value)

    def tensor_index(self, count: int) -> list[tuple[str, tuple[int, ...], GGMLQuantizationType, int, int]]:
        """(name, shape, type, relative offset, start of the entry) of every tensor."""
        c = self.c
        entries = []
        names: set[str] = set()
        for i in range(count):
            start = c.pos
            name = c.name(f"tensor #{i}'s name", c.limits.name_bytes)
            if name in names:
                raise c.fail(f"tensor {name!r} appears twice", start)
            names.add(name)
            at = c.pos
            n_dims = c.u32(f"tensor {name!r}'s dimension count")
            if not 1 <= n_dims <= c.limits.dims:
                raise c.fail(f"tensor {name!r} has {n_dims} dimensions; expected 1 to {c.limits.dims}", at)
            shape = tuple(int(d) for d in c.array("<u8", n_dims, f"tensor {name!r}'s dimensions"))
            at = c.pos
            raw_type = c.u32(f"tensor {name!r}'s type")
            try:
                qtype = GGMLQuantizationType(raw_type)
                block, _ = GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise c.fail(f"tensor {name!r} has unknown type {raw_type}", at) from None
            if shape[0] % block:
                raise c.fail(f"tensor {name!r}: its rows of {shape[0]} do not fill {qtype.name} blocks of {block}", at)
            offset = c.u64(f"tensor {name!r}'s offset")
            entries.append((name, shape, qtype, offset, start))
        return entries


@dataclass
class GgufFile:
    """Metadata (decoded to Python values) and tensor access for one GGUF file."""

    path: Path
    metadata: dict[str, Any]
    duplicate_keys: list[str]
    tensor_index: list[TensorInfo]
    _data: mmap.mmap | bytes

    @classmethod
    def open(cls, path: Path, limits: Limits = LIMITS) -> GgufFile:
        if not path.is_file():
            raise GgufError(f"{path}: no such GGUF file")
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, 2)
                data: mmap.mmap | bytes = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise GgufError(f"{path}: not a readable GGUF file ({exc.strerror or exc})") from exc
        return cls.parse(path, data, limits)

    @classmethod
    def parse(cls, path: Path, data: mmap.mmap | bytes, limits: Limits = LIMITS) -> GgufFile:
        """Parses ``data`` (the file's bytes); ``path`` names it in errors."""
        cursor = _Cursor(data, f"{path}: not a readable GGUF file:", limits)
        parser = _Parser(cursor)
        tensor_count, key_count = parser.header()
        parser.keys(key_count)
        entries = parser.tensor_index(tensor_count)
        alignment = parser.alignment()
        data_start = -(-cursor.pos // alignment) * alignment
        index = []
        for name, shape, qtype, offset, start in entries:
            block, type_size = GGML_QUANT_SIZES[qtype]
            n_elements = int(np.prod(shape, dtype=object))
            n_bytes = n_elements // block * type_size
            if offset % alignment:
                raise cursor.fail(f"tensor {name!r}'s data offset {offset} is not a multiple of {alignment}", start)
            if data_start + offset + n_bytes > len(data):
                raise cursor.fail(
                    f"tensor {name!r} ({'x'.join(map(str, shape))} {qtype.name}, {n_bytes} bytes at {offset}) "
                    f"reaches past the end of the file",
                    start,
                )
            index.append(TensorInfo(name, shape, qtype, data_start + offset, n_elements, n_bytes))
        return cls(path, parser.metadata, parser.duplicates, index, data)

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture")
        if not isinstance(value, str):
            raise GgufError(f"{self.path}: general.architecture is {value!r}; expected the model's architecture name")
        return value

    def key(self, suffix: str, default: Any = None) -> Any:
        """``{architecture}.{suffix}``."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    def parameter_count(self) -> int:
        """Elements in every tensor (read from the tensor index; nothing is dequantised)."""
        return sum(t.n_elements for t in self.tensor_index)

    def tensor_types(self) -> dict[str, str]:
        return {t.name: t.qtype.name for t in self.tensor_index}

    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor dequantised to float32, in PyTorch orientation ([rows, columns])."""
        return {t.name: self._dequantised(t) for t in self.tensor_index}

    def _dequantised(self, t: TensorInfo) -> np.ndarray:
        shape = tuple(reversed(t.shape))
        raw = np.frombuffer(self._data, dtype=np.uint8, count=t.n_bytes, offset=t.offset)
        if t.qtype in _PLAIN_TYPES:
            array = raw.view(_PLAIN_TYPES[t.qtype])
        elif t.qtype == GGMLQuantizationType.BF16:
            array = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            block, type_size = GGML_QUANT_SIZES[t.qtype]
            try:
                with np.errstate(all="ignore"):  # non-finite weights are refused by the readers, not warned about
                    array = dequantize(raw.reshape(*shape[:-1], shape[-1] // block * type_size), t.qtype)
            except NotImplementedError:
                raise GgufError(
                    f"{self.path}: tensor {t.name!r} is {t.qtype.name}, which cannot be dequantised"
                ) from None
        with np.errstate(all="ignore"):  # float64 values past float32's range become inf, refused later
            return np.asarray(array, dtype=np.float32).reshape(shape)

    def dominant_type(self) -> str:
        """The quantisation of the large matrices (what a user calls the file's precision)."""
        counts: dict[str, int] = {}
        for t in self.tensor_index:
            if len(t.shape) >= 2:
                counts[t.qtype.name] = counts.get(t.qtype.name, 0) + t.n_elements
        return max(counts, key=counts.__getitem__) if counts else "F32"
