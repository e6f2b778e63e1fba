"""Crafted malformed model files: what an attacker (or a broken download) hands ``rerank-convert``.

Each case is one defect in an otherwise valid file: the ``xlmr`` fixture checkpoint written as a
GGUF in llama.cpp's layout (:func:`tests.gguf_writer.xlmr_gguf_parts`), or a fixture checkpoint
folder. GGUF defects are structural (truncation at every kind of field, counts and lengths far
beyond the file, unknown types) and semantic (absurd sizes, wrong value types, tensors whose
shapes disagree with the metadata, a tokenizer that cannot be rebuilt); checkpoint defects are
in ``config.json`` (zero, negative, huge and mistyped sizes, heads that do not divide the hidden
size, not JSON at all) and in the tensor files. :mod:`tests.integration.converters.crafted_runner`
converts them; :mod:`tests.integration.converters.test_reader_fuzzing` mutates the same bases.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType
from gguf.gguf_writer import GGUFValue
from safetensors.numpy import load_file, save_file

from tests.gguf_writer import Piece, gguf_pieces, write_gguf, xlmr_gguf_parts

DELETE = object()
"""A config or metadata edit that removes the key."""
HUGE = (2**62, 2**64 - 1, 2**32)
"""Counts and lengths that no file holds: what the probe that grew the converter to 3.2 GB used."""

GgufParts = tuple[dict[str, GGUFValue], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    """A ``.gguf`` file or a checkpoint folder."""


# --- GGUF ------------------------------------------------------------------------------------


def base_gguf(checkpoint: Path, out: Path) -> Path:
    """The valid GGUF every GGUF case is one defect away from."""
    return write_gguf(out, *xlmr_gguf_parts(checkpoint))


def with_field(data: bytes, piece: Piece, value: int) -> bytes:
    """``data`` with the integer field ``piece`` set to ``value`` (wrapped to the field's width)."""
    return data[: piece.offset] + (value % (1 << (8 * piece.size))).to_bytes(piece.size, "little") + data[piece.end :]


def _first(pieces: list[Piece], kind: str, label: str | None = None) -> Piece:
    return next(p for p in pieces if p.kind == kind and (label is None or p.label == label))


def structural_cases(base: Path, out: Path) -> list[Case]:
    """Truncations at every kind of field, huge counts and lengths, unknown types."""
    data = base.read_bytes()
    pieces = gguf_pieces(data)
    cases: dict[str, bytes] = {}
    # Truncated: inside and just before the first field of every kind, and in the middle of the big arrays.
    for kind in dict.fromkeys(p.kind for p in pieces):
        piece = _first(pieces, kind)
        cases[f"cut before the first {kind}"] = data[: piece.offset]
        if piece.size > 1:
            cases[f"cut inside the first {kind}"] = data[: piece.offset + piece.size // 2]
    for label in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.precompiled_charsmap"):
        inside = [p for p in pieces if p.label == label]
        cases[f"cut in the middle of {label}"] = data[: inside[len(inside) // 2].offset]
    last_name = [p for p in pieces if p.kind == "name"][-1]
    cases["cut inside the last tensor name"] = data[: last_name.offset + 1]
    cases["cut inside the last tensors' data"] = data[:-64]
    cases["empty file"] = b""
    # Counts and lengths the file cannot hold.
    for kind, label in (
        ("tensor_count", None),
        ("kv_count", None),
        ("key_length", None),
        ("string_length", "general.architecture"),
        ("item_count", "tokenizer.ggml.tokens"),
        ("item_count", "tokenizer.ggml.scores"),
        ("item_count", "tokenizer.ggml.precompiled_charsmap"),
        ("name_length", None),
        ("dim", None),
        ("tensor_offset", None),
    ):
        piece = _first(pieces, kind, label)
        for value in HUGE:
            cases[f"{kind} {label or ''} = {value}"] = with_field(data, piece, value)
    cases["n_dims = 5"] = with_field(data, _first(pieces, "n_dims"), 5)
    cases["n_dims = 2^31"] = with_field(data, _first(pieces, "n_dims"), 2**31)
    cases["tensor data offset unaligned"] = with_field(data, [p for p in pieces if p.kind == "tensor_offset"][1], 4)
    # Types nobody defined.
    cases["wrong magic"] = b"GGUX" + data[4:]
    for version in (1, 4, 0x03000000):
        cases[f"version {version:#x}"] = with_field(data, _first(pieces, "version"), version)
    cases["value type 99"] = with_field(data, _first(pieces, "value_type"), 99)
    cases["array item type 99"] = with_field(data, _first(pieces, "item_type"), 99)
    cases["array of arrays"] = with_field(data, _first(pieces, "item_type"), GGUFValueType.ARRAY)
    cases["tensor type 99"] = with_field(data, _first(pieces, "tensor_type"), 99)
    cases["tensor type I32"] = with_field(data, _first(pieces, "tensor_type"), 26)
    cases["key not UTF-8"] = data.replace(b"general.architecture", b"general.\xffrchitecture", 1)
    # The probe: 96 bytes claiming a 2^62-element metadata array.
    probe = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    probe += _gguf_string(b"general.architecture") + struct.pack("<I", 8) + _gguf_string(b"bert")
    probe += _gguf_string(b"x") + struct.pack("<IIQ", 9, 0, 2**62)
    cases["the probe: a 2^62-element array in 96 bytes"] = probe
    return _write(out, cases)


def _gguf_string(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


def _write(out: Path, cases: dict[str, bytes]) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, data) in enumerate(cases.items()):
        path = out / f"case-{i:03d}.gguf"
        path.write_bytes(data)
        written.append(Case(name, path))
    return written


def _scalar(value: Any, kind: GGUFValueType) -> GGUFValue:
    return GGUFValue(value, kind)


U32, I32, F32, S = GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32, GGUFValueType.STRING

METADATA_EDITS: dict[str, dict[str, Any]] = {
    "no architecture": {"general.architecture": DELETE},
    "architecture is a number": {"general.architecture": _scalar(7, U32)},
    "architecture llama": {"general.architecture": _scalar("llama", S)},
    "no block count": {"bert.block_count": DELETE},
    "zero blocks": {"bert.block_count": _scalar(0, U32)},
    "negative blocks": {"bert.block_count": _scalar(-1, I32)},
    "2^31 blocks": {"bert.block_count": _scalar(2**31, U32)},
    "block count is a string": {"bert.block_count": _scalar("2", S)},
    "zero embedding length": {"bert.embedding_length": _scalar(0, U32)},
    "embedding length unlike the tensors": {"bert.embedding_length": _scalar(32, U32)},
    "zero heads": {"bert.attention.head_count": _scalar(0, U32)},
    "heads not dividing the hidden size": {"bert.attention.head_count": _scalar(3, U32)},
    "head count is an array": {"bert.attention.head_count": GGUFValue([4, 4], GGUFValueType.ARRAY, U32)},
    "zero feed-forward length": {"bert.feed_forward_length": _scalar(0, U32)},
    "feed-forward length unlike the tensors": {"bert.feed_forward_length": _scalar(64, U32)},
    "zero context": {"bert.context_length": _scalar(0, U32)},
    "context past the position table": {"bert.context_length": _scalar(1000, U32)},
    "context of 10^9": {"bert.context_length": _scalar(10**9, U32)},
    "negative layer norm epsilon": {"bert.attention.layer_norm_epsilon": _scalar(-1e-5, F32)},
    "NaN layer norm epsilon": {"bert.attention.layer_norm_epsilon": _scalar(float("nan"), F32)},
    "padding id outside the vocabulary": {"tokenizer.ggml.padding_token_id": _scalar(10**6, U32)},
    "tokenizer model is a number": {"tokenizer.ggml.model": _scalar(5, U32)},
    "tokenizer model llama": {"tokenizer.ggml.model": _scalar("llama", S)},
    "no tokens": {"tokenizer.ggml.tokens": DELETE},
    "tokens are numbers": {"tokenizer.ggml.tokens": GGUFValue([1, 2, 3], GGUFValueType.ARRAY, U32)},
    "no scores": {"tokenizer.ggml.scores": DELETE},
    "scores shorter than the tokens": {"tokenizer.ggml.scores": GGUFValue([0.0] * 10, GGUFValueType.ARRAY, F32)},
    "token types are strings": {"tokenizer.ggml.token_type": GGUFValue(["a"], GGUFValueType.ARRAY, S)},
    "unknown token id outside the vocabulary": {"tokenizer.ggml.unknown_token_id": _scalar(10**6, U32)},
    "cls token id outside the vocabulary": {"tokenizer.ggml.cls_token_id": _scalar(10**6, U32)},
    "charsmap not base64": {"tokenizer.ggml.precompiled_charsmap": _scalar("not base64!", S)},
    "charsmap is noise": {
        "tokenizer.ggml.precompiled_charsmap": GGUFValue(list(range(40)), GGUFValueType.ARRAY, GGUFValueType.UINT8)
    },
    "alignment of zero": {"general.alignment": _scalar(0, U32)},
    "alignment not a power of two": {"general.alignment": _scalar(48, U32)},
    "alignment is a float": {"general.alignment": _scalar(32.0, F32)},
}


def _charsmap_escaping_the_trie(charsmap: list[int]) -> list[int]:
    """The table with its root pointing past the trie: the tokenizers library builds it, then
    panics on the first character it normalises."""
    data = bytearray(charsmap)
    data[4:8] = struct.pack("<I", (1 << 30) | 0xFF)
    return list(data)


def _tensor_edits() -> dict[str, Callable[[dict[str, np.ndarray]], None]]:
    def drop(name: str) -> Callable[[dict[str, np.ndarray]], None]:
        return lambda t: t.pop(name)

    def set_to(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, np.ndarray]], None]:
        return lambda t: t.__setitem__(name, make(t[name]))

    return {
        "a layer's ffn_down missing": drop("blk.1.ffn_down.weight"),
        "no classifier at all": lambda t: [
            t.pop(n) for n in ("cls.weight", "cls.bias", "cls.output.weight", "cls.output.bias")
        ],
        "word embeddings narrower than the model": set_to("token_embd.weight", lambda a: a[:, :32]),
        "attn_q with too few rows": set_to("blk.0.attn_q.weight", lambda a: a[:32]),
        "attn_k with other columns than attn_q": set_to("blk.0.attn_k.weight", lambda a: a[:, :32]),
        "ffn_up with other rows than the feed-forward length": set_to("blk.0.ffn_up.weight", lambda a: a[:64]),
        "classifier with two outputs": set_to("cls.output.weight", lambda a: np.concatenate([a, a])),
        "position table shorter than the context": set_to("position_embd.weight", lambda a: a[:10]),
        "token types not whole rows": set_to("token_types.weight", lambda a: a.reshape(-1)[:-1]),
        "fewer embedding rows than tokens": set_to("token_embd.weight", lambda a: a[:100]),
        "a layer norm of the wrong length": set_to("blk.1.layer_output_norm.weight", lambda a: a[:-1]),
        "a NaN among the weights": set_to("blk.0.ffn_up.weight", lambda a: np.where(a == a.max(), np.nan, a)),
    }


def semantic_cases(checkpoint: Path, out: Path) -> list[Case]:
    """Valid GGUF structure, absurd or inconsistent content."""
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    edits: list[tuple[str, Callable[[GgufParts], None]]] = [
        (name, lambda parts, e=edit: _edit_metadata(parts[0], e)) for name, edit in METADATA_EDITS.items()
    ]
    edits.append(
        (
            "charsmap whose root leaves the trie",
            lambda parts: _edit_metadata(
                parts[0],
                {
                    "tokenizer.ggml.precompiled_charsmap": GGUFValue(
                        _charsmap_escaping_the_trie(parts[0]["tokenizer.ggml.precompiled_charsmap"].value),
                        GGUFValueType.ARRAY,
                        GGUFValueType.UINT8,
                    )
                },
            ),
        )
    )
    edits += [(name, lambda parts, e=edit: e(parts[1])) for name, edit in _tensor_edits().items()]
    metadata, tensors = xlmr_gguf_parts(checkpoint)
    for i, (name, edit) in enumerate(edits):
        parts = (dict(metadata), dict(tensors))
        edit(parts)
        cases.append(Case(name, write_gguf(out / f"semantic-{i:03d}.gguf", *parts)))
    return cases


def _edit_metadata(metadata: dict[str, GGUFValue], edit: dict[str, Any]) -> None:
    for key, value in edit.items():
        if value is DELETE:
            metadata.pop(key, None)
        else:
            metadata[key] = value


# --- Hugging Face checkpoints -----------------------------------------------------------------

XLMR_CONFIG_EDITS: dict[str, dict[str, Any]] = {
    "zero heads": {"num_attention_heads": 0},
    "negative heads": {"num_attention_heads": -4},
    "heads not dividing the hidden size": {"num_attention_heads": 3},
    "more heads than hidden units": {"num_attention_heads": 128},
    "heads as a string": {"num_attention_heads": "4"},
    "heads as a float": {"num_attention_heads": 4.0},
    "heads as a boolean": {"num_attention_heads": True},
    "heads null": {"num_attention_heads": None},
    "no heads": {"num_attention_heads": DELETE},
    "10^30 heads": {"num_attention_heads": 10**30},
    "zero hidden size": {"hidden_size": 0},
    "negative hidden size": {"hidden_size": -64},
    "hidden size 2^40": {"hidden_size": 2**40},
    "hidden size unlike the tensors": {"hidden_size": 32, "num_attention_heads": 4},
    "zero layers": {"num_hidden_layers": 0},
    "negative layers": {"num_hidden_layers": -1},
    "a million layers": {"num_hidden_layers": 10**6},
    "more layers than the tensors hold": {"num_hidden_layers": 3},
    "zero intermediate size": {"intermediate_size": 0},
    "intermediate size unlike the tensors": {"intermediate_size": 64},
    "negative layer norm epsilon": {"layer_norm_eps": -1e-5},
    "zero layer norm epsilon": {"layer_norm_eps": 0},
    "NaN layer norm epsilon": {"layer_norm_eps": float("nan")},
    "infinite layer norm epsilon": {"layer_norm_eps": float("inf")},
    "layer norm epsilon as a string": {"layer_norm_eps": "1e-5"},
    "negative padding id": {"pad_token_id": -1},
    "padding id outside the vocabulary": {"pad_token_id": 10**6},
    "padding id as a list": {"pad_token_id": [1]},
    "zero positions": {"max_position_embeddings": 0},
    "positions fewer than padding + 2": {"max_position_embeddings": 2},
    "positions past the table": {"max_position_embeddings": 600},
    "10^12 positions": {"max_position_embeddings": 10**12},
    "relu activation": {"hidden_act": "relu"},
    "activation as a number": {"hidden_act": 5},
    "unknown model type": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    "model type as a number": {"model_type": 7},
    "no model type": {"model_type": DELETE, "architectures": DELETE},
}
GTE_CONFIG_EDITS: dict[str, dict[str, Any]] = {
    "RoPE factor zero": {"rope_scaling": {"type": "ntk", "factor": 0}},
    "negative RoPE factor": {"rope_scaling": {"type": "ntk", "factor": -8.0}},
    "RoPE factor as a string": {"rope_scaling": {"type": "ntk", "factor": "8"}},
    "RoPE factor 1e308": {"rope_scaling": {"type": "ntk", "factor": 1e308}},
    "RoPE scaling a list": {"rope_scaling": [8.0]},
    "RoPE type a number": {"rope_scaling": {"type": 5, "factor": 8.0}},
    "negative RoPE theta": {"rope_theta": -1},
    "NaN RoPE theta": {"rope_theta": float("nan")},
    "RoPE theta 1e300": {"rope_theta": 1e300},
}
QWEN3_CONFIG_EDITS: dict[str, dict[str, Any]] = {
    "Qwen3: layers as a string": {"num_hidden_layers": "2"},
    "Qwen3: 2^40 layers": {"num_hidden_layers": 2**40},
    "Qwen3: zero hidden size": {"hidden_size": 0},
    "Qwen3: no heads": {"num_attention_heads": DELETE},
    "Qwen3: more key/value heads than heads": {"num_key_value_heads": 8},
    "Qwen3: key/value heads not dividing the heads": {"num_key_value_heads": 3},
    "Qwen3: an odd head dimension": {"head_dim": 31},
    "Qwen3: negative RoPE theta": {"rope_theta": -1},
    "Qwen3: RoPE scaling a list": {"rope_scaling": [8.0]},
    "Qwen3: NaN RMSNorm epsilon": {"rms_norm_eps": float("nan")},
    "Qwen3: architectures a number": {"architectures": 1},
}
"""Defects in the Qwen3-Reranker fixture's config.json (tiny: hidden 64, 4 heads, 2 key/value heads of 32)."""
RAW_CONFIGS: dict[str, bytes] = {
    "config.json not JSON": b'{"model_type": "xlm-roberta",',
    "config.json a JSON list": b"[]",
    "config.json a JSON string": b'"xlm-roberta"',
    "config.json nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "config.json of 2 MB": b'{"model_type": "xlm-roberta", "pad": "' + b"x" * 2_000_000 + b'"}',
    "config.json not UTF-8": b'\xff\xfe{"model_type": "bert"}',
    "config.json with a 5000-digit number": b'{"num_attention_heads": 1' + b"0" * 5000 + b"}",
}


def _folder_like(base: Path, folder: Path) -> Path:
    """A checkpoint folder whose files link to ``base``'s (the case then replaces one)."""
    folder.mkdir(parents=True)
    for file in base.iterdir():
        (folder / file.name).symlink_to(file)
    return folder


def _with_config(base: Path, folder: Path, config: bytes) -> Path:
    folder = _folder_like(base, folder)
    (folder / "config.json").unlink()
    (folder / "config.json").write_bytes(config)
    return folder


def _edited_config(base: Path, edit: dict[str, Any]) -> bytes:
    config = json.loads((base / "config.json").read_text())
    for key, value in edit.items():
        if value is DELETE:
            config.pop(key, None)
        else:
            config[key] = value
    return json.dumps(config).encode()


def _with_tensors(base: Path, folder: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> Path:
    folder = _folder_like(base, folder)
    tensors = dict(load_file(str(base / "model.safetensors")))
    edit(tensors)
    (folder / "model.safetensors").unlink()
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _with_file(base: Path, folder: Path, name: str, data: bytes, drop: str | None = None) -> Path:
    folder = _folder_like(base, folder)
    if drop:
        (folder / drop).unlink()
    if (folder / name).is_symlink():
        (folder / name).unlink()
    (folder / name).write_bytes(data)
    return folder


def _header_edited(base: Path, edit: Callable[[dict[str, Any]], None]) -> bytes:
    data = (base / "model.safetensors").read_bytes()
    (length,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + length])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


def checkpoint_cases(xlmr: Path, gte: Path, qwen3: Path, out: Path) -> list[Case]:
    """``config.json`` and tensor-file defects in copies of the ``xlmr``, ``gte`` and Qwen3 fixtures."""
    out.mkdir(parents=True, exist_ok=True)
    cases = []

    def add(name: str, make: Callable[[Path], Path]) -> None:
        cases.append(Case(name, make(out / f"ckpt-{len(cases):03d}")))

    for name, edit in XLMR_CONFIG_EDITS.items():
        add(name, lambda f, e=edit: _with_config(xlmr, f, _edited_config(xlmr, e)))
    for name, edit in GTE_CONFIG_EDITS.items():
        add(name, lambda f, e=edit: _with_config(gte, f, _edited_config(gte, e)))
    for name, edit in QWEN3_CONFIG_EDITS.items():
        add(name, lambda f, e=edit: _with_config(qwen3, f, _edited_config(qwen3, e)))
    for name, raw in RAW_CONFIGS.items():
        add(name, lambda f, r=raw: _with_config(xlmr, f, r))
    safetensors = (xlmr / "model.safetensors").read_bytes()
    weights = "roberta.encoder.layer.0.attention.self.query.weight"
    for name, data in {
        "safetensors header length 2^62": struct.pack("<Q", 2**62) + safetensors[8:],
        "safetensors header past the end": struct.pack("<Q", len(safetensors)) + safetensors[8:],
        "safetensors header not JSON": safetensors[:8] + b"\x00" * 16 + safetensors[24:],
        "safetensors header a JSON list": _header_edited(xlmr, lambda h: h.clear()).replace(b"{}", b"[]", 1),
        "safetensors truncated": safetensors[: len(safetensors) // 2],
        "safetensors of 4 bytes": safetensors[:4],
        "a negative dimension": _header_edited(xlmr, lambda h: h[weights].update(shape=[-64, 64])),
        "offsets past the data": _header_edited(xlmr, lambda h: h[weights].update(data_offsets=[0, 2**40])),
        "an unknown dtype": _header_edited(xlmr, lambda h: h[weights].update(dtype="F99")),
        "a shape larger than its bytes": _header_edited(xlmr, lambda h: h[weights].update(shape=[640, 64])),
    }.items():
        add(name, lambda f, d=data: _with_file(xlmr, f, "model.safetensors", d))
    add(
        "pytorch_model.bin of noise",
        lambda f: _with_file(xlmr, f, "pytorch_model.bin", b"\x80\x04noise" * 50, "model.safetensors"),
    )
    add(
        "pytorch_model.bin a truncated zip",
        lambda f: _with_file(xlmr, f, "pytorch_model.bin", b"PK\x03\x04" + b"\x00" * 60, "model.safetensors"),
    )
    layer = "roberta.encoder.layer.1."
    for name, edit in {
        "a tensor missing": lambda t: t.pop(layer + "output.dense.weight"),
        "no classifier": lambda t: t.pop("classifier.out_proj.weight"),
        "a classifier with two outputs": lambda t: t.update(
            {"classifier.out_proj.weight": np.concatenate([t["classifier.out_proj.weight"]] * 2)}
        ),
        "query rows unlike key rows": lambda t: t.update({weights: t[weights][:32]}),
        "fewer embedding rows than the tokenizer has tokens": lambda t: t.update(
            {"roberta.embeddings.word_embeddings.weight": t["roberta.embeddings.word_embeddings.weight"][:100]}
        ),
        "a position table shorter than max_position_embeddings": lambda t: t.update(
            {"roberta.embeddings.position_embeddings.weight": t["roberta.embeddings.position_embeddings.weight"][:50]}
        ),
        "no word embeddings": lambda t: t.pop("roberta.embeddings.word_embeddings.weight"),
        "an infinity among the weights": lambda t: t.update(
            {weights: np.where(t[weights] == t[weights].max(), np.inf, t[weights])}
        ),
    }.items():
        add(name, lambda f, e=edit: _with_tensors(xlmr, f, e))
    return cases
