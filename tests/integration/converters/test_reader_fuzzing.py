"""The GGUF reader and the checkpoint config reader, fuzzed with structure-aware mutations.

Hypothesis mutates valid files rather than drawing bytes at random, so that the mutants get
deep into the readers: a GGUF's fields (:func:`tests.gguf_writer.gguf_pieces`: counts, lengths,
types, offsets, dimensions set to boundary values, truncations at field boundaries, bytes
changed inside strings and tensor data) and its content (metadata values replaced by values of
other types and ranges, keys and tensors dropped); a checkpoint's ``config.json`` values
replaced, deleted or nested. Every mutant must either read or be refused with a
:class:`~rerank.converters.errors.ConversionError` naming the file (what ``rerank-convert``
prints as one line); any other exception, a native panic, or a read that allocates more than
:data:`MEMORY_BOUND` fails. Seeded and small in ``make test``; ``make fuzz`` (``RERANK_FUZZ=full``)
runs :data:`FULL_EXAMPLES` of each, randomly.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFValueType
from gguf.gguf_writer import GGUFValue
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import normalizers

from rerank.converters import families
from rerank.converters.charsmap import charsmap_problem
from rerank.converters.convert import served_template
from rerank.converters.errors import ConversionError
from rerank.converters.hf_checkpoint import load_checkpoint
from rerank.converters.sources import load_source
from tests.fuzzing import examples, hypothesis_settings
from tests.gguf_writer import Piece, gguf_pieces, write_gguf, xlmr_gguf_parts
from tests.integration.converters.crafted import with_field

FULL_EXAMPLES = 1000
SEEDED_EXAMPLES = 25
MEMORY_BOUND = 256 * 1024 * 1024
"""Python and numpy allocations a read of the ~1.4 MB fixture may peak at: several times what
its weights, vocabulary and rebuilt tokenizer need; an unchecked count is gigabytes."""
BOUNDARY_INTS = (0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 63, 64, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32)
BOUNDARY_INTS += (2**62, 2**63 - 1, 2**63, 2**64 - 1)
TEXTS = [
    "what do pandas eat?",
    "Ｆｕｌｌｗｉｄｔｈ ﬁ ① Ⅻ ㍿",
    "熊猫吃竹子",
    " a  <mask> b ",
    "\u3000\x00\u200b",
    "x" * 300,
]


def read_gguf_source(path: Path) -> None:
    """What ``rerank-convert`` does with a GGUF up to its graph: read it, rebuild and check the
    tokenizer, lay out a pair, and tokenise (a tokenizer that panics on text must not get out)."""
    bundle = load_source(str(path), progress=lambda _: None, check_memory=False)
    served_template(bundle.tokenizer, bundle.loaded, families.of(bundle.loaded))
    bundle.tokenizer.encode_batch([(t, t) for t in TEXTS])


def assert_read_or_refused(read: Any, path: Path) -> None:
    refusal = ""
    tracemalloc.start()
    try:
        read(path)
    except ConversionError as exc:
        refusal = str(exc)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert not refusal or path.name in refusal, refusal
    assert peak <= MEMORY_BOUND, f"{peak / 2**20:.0f} MiB"


# --- GGUF --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufBase:
    """The valid file the mutants start from: its parts, its bytes and its fields by kind."""

    metadata: dict[str, GGUFValue]
    tensors: dict[str, np.ndarray]
    data: bytes
    fields: dict[str, list[Piece]]


@pytest.fixture(scope="module")
def gguf_base(checkpoint, tmp_path_factory) -> GgufBase:
    metadata, tensors = xlmr_gguf_parts(checkpoint("xlmr"))
    data = write_gguf(tmp_path_factory.mktemp("gguf-base") / "base.gguf", metadata, tensors).read_bytes()
    fields: dict[str, list[Piece]] = {}
    for piece in gguf_pieces(data):
        fields.setdefault(piece.kind, []).append(piece)
    return GgufBase(metadata, tensors, data, fields)


INT_FIELDS = (
    "version",
    "tensor_count",
    "kv_count",
    "key_length",
    "value_type",
    "item_type",
    "item_count",
    "string_length",
    "name_length",
    "n_dims",
    "dim",
    "tensor_type",
    "tensor_offset",
)


@st.composite
def field_mutants(draw: st.DrawFn, base: GgufBase) -> bytes:
    """The file with a few of its fields changed: integer fields set to boundary (or any) values,
    bytes changed inside strings, scalars and tensor data, or the file cut at a field."""
    data = base.data
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(base.fields)))
        piece = draw(st.sampled_from(base.fields[kind]))
        if kind in INT_FIELDS:
            value = draw(st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(0, 2**64 - 1)))
            data = with_field(data, piece, value)
        elif piece.size:
            at = piece.offset + draw(st.integers(0, piece.size - 1))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if draw(st.booleans()):
        cut = draw(st.sampled_from(base.fields[draw(st.sampled_from(sorted(base.fields)))]))
        data = data[: cut.offset + draw(st.integers(0, min(cut.size, 16)))]
    return data


def odd_values() -> st.SearchStrategy[GGUFValue]:
    """GGUF values of every type, in and out of sensible ranges."""
    U32, I32, S, F32 = GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.STRING, GGUFValueType.FLOAT32
    return st.one_of(
        st.builds(GGUFValue, st.sampled_from((0, 1, 2, 3, 4, 64, 65, 128, 3001, 3002, 2**31, 2**32 - 1)), st.just(U32)),
        st.builds(GGUFValue, st.integers(-(2**31), 2**31 - 1), st.just(I32)),
        st.builds(GGUFValue, st.floats(width=32), st.just(F32)),
        st.builds(
            GGUFValue, st.sampled_from(("", "bert", "t5", "gpt2", "new", "jina-bert-v2", "llama", "\xff")), st.just(S)
        ),
        st.builds(GGUFValue, st.booleans(), st.just(GGUFValueType.BOOL)),
        st.builds(
            GGUFValue,
            st.lists(st.integers(0, 255), min_size=1, max_size=8),
            st.just(GGUFValueType.ARRAY),
            st.just(GGUFValueType.UINT8),
        ),
        st.builds(
            GGUFValue, st.lists(st.text(max_size=4), min_size=1, max_size=8), st.just(GGUFValueType.ARRAY), st.just(S)
        ),
    )


@st.composite
def content_mutants(draw: st.DrawFn, base: GgufBase) -> tuple[dict[str, GGUFValue], dict[str, np.ndarray]]:
    """Metadata values replaced or dropped, tensors dropped or cut."""
    metadata, tensors = dict(base.metadata), dict(base.tensors)
    keys = [*sorted(metadata), "general.alignment", "bert.rope.freq_base"]
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(("value", "value", "drop key", "drop tensor", "cut tensor")))
        if what == "value":
            metadata[draw(st.sampled_from(keys))] = draw(odd_values())
        elif what == "drop key":
            metadata.pop(draw(st.sampled_from(sorted(metadata))), None)
        else:
            name = draw(st.sampled_from(sorted(tensors)))
            if what == "drop tensor":
                tensors.pop(name)
            else:
                rows = draw(st.integers(0, max(tensors[name].shape[0] - 1, 0)))
                tensors[name] = tensors[name][:rows] if rows else tensors[name].reshape(-1)
    return metadata, tensors


@given(data=st.data())
@hypothesis_settings(examples(FULL_EXAMPLES, SEEDED_EXAMPLES))
def test_gguf_field_mutants(data: st.DataObject, gguf_base, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("gguf-fields") / "mutant.gguf"
    path.write_bytes(data.draw(field_mutants(gguf_base)))
    assert_read_or_refused(read_gguf_source, path)


@given(data=st.data())
@hypothesis_settings(examples(FULL_EXAMPLES, SEEDED_EXAMPLES))
def test_gguf_content_mutants(data: st.DataObject, gguf_base, tmp_path_factory) -> None:
    path = write_gguf(tmp_path_factory.mktemp("gguf-content") / "mutant.gguf", *data.draw(content_mutants(gguf_base)))
    assert_read_or_refused(read_gguf_source, path)


# --- config.json --------------------------------------------------------------------------------

CONFIG_KEYS = (
    "model_type",
    "architectures",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "layer_norm_eps",
    "pad_token_id",
    "max_position_embeddings",
    "hidden_act",
    "position_embedding_type",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
)
"""What the readers consult (and some keys nobody reads)."""


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.sampled_from((0, 1, 2, 3, 4, 8, 63, 64, 127, 128, 130, 2**31, 2**63, -1, -64, 1e-12, 0.5, 8.0)),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(("gelu", "relu", "ntk", "linear", "default", "alibi", "xlm-roberta", "bert", "new", "rope")),
        st.text(max_size=8),
        st.booleans(),
        st.none(),
    )
    rope = st.dictionaries(st.sampled_from(("type", "rope_type", "factor", "rope_theta")), scalars, max_size=3)
    return st.one_of(scalars, rope, st.lists(scalars, max_size=3))


@st.composite
def config_mutants(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    config = dict(base)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(CONFIG_KEYS + tuple(sorted(base))))
        if draw(st.integers(0, 4)) == 0:
            config.pop(key, None)
        else:
            config[key] = draw(json_values())
    return config


@pytest.mark.parametrize("kind", ["xlmr", "jina-v1", "gte"])
@given(data=st.data())
@hypothesis_settings(examples(FULL_EXAMPLES, SEEDED_EXAMPLES))
def test_config_mutants(kind: str, data: st.DataObject, checkpoint, tmp_path_factory) -> None:
    base = checkpoint(kind)
    folder = tmp_path_factory.mktemp(f"config-{kind}")
    for file in base.iterdir():
        if file.name != "config.json":
            (folder / file.name).symlink_to(file)
    config = data.draw(config_mutants(json.loads((base / "config.json").read_text())))
    (folder / "config.json").write_text(json.dumps(config))
    assert_read_or_refused(lambda path: load_checkpoint(str(path)), folder)


# --- the charsmap check --------------------------------------------------------------------------

RANDOM_TEXT = "".join(
    chr(c) for c in np.random.default_rng(0).integers(0x20, 0x30000, 4000) if not 0xD800 <= c < 0xE000
)


@given(data=st.data())
@hypothesis_settings(examples(20 * FULL_EXAMPLES, 10 * SEEDED_EXAMPLES))
def test_an_accepted_charsmap_never_panics(data: st.DataObject, gguf_base: GgufBase) -> None:
    """Whatever :func:`~rerank.converters.charsmap.charsmap_problem` accepts, the tokenizers
    library normalises any text with, without a panic (a PanicException fails the test)."""
    charsmap = bytearray(gguf_base.metadata["tokenizer.ggml.precompiled_charsmap"].value)
    (trie_bytes,) = struct.unpack_from("<I", charsmap)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(
            st.integers(0, 4 + trie_bytes - 1) if data.draw(st.booleans()) else st.integers(0, len(charsmap) - 1)
        )
        charsmap[at] = data.draw(st.integers(0, 255))
    if charsmap_problem(bytes(charsmap)) is None:
        normalizer = normalizers.Precompiled(bytes(charsmap))
        normalizer.normalize_str(RANDOM_TEXT)
        normalizer.normalize_str(data.draw(st.text(min_size=1, max_size=200)))
