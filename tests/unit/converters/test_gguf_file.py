"""GgufFile reads every quantisation the gguf package can write, in the right shape and order, and
refuses counts the file cannot hold before it allocates anything."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("gguf", reason="needs the [convert] extra")

from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from rerank.converters.errors import GgufError
from rerank.converters.gguf_file import GgufFile, Limits

# The types the gguf package can also write (it dequantises K-quants but cannot quantise them;
# files with K-quants come from llama-quantize and are read through the same code path).
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_1"]
# Worst-case error relative to the largest value, for N(0, 1) data, with margin.
TOLERANCE = {"F32": 0, "F16": 1e-3, "BF16": 1e-2, "Q8_0": 2e-2, "Q4_0": 0.3, "Q5_1": 0.15}


@pytest.mark.parametrize("name", TYPES)
def test_dequantised_tensor_matches_the_original(name, tmp_path):
    rng = np.random.default_rng(0)
    original = rng.standard_normal((3, 512)).astype(np.float32)  # [rows, columns], PyTorch orientation
    qtype = GGMLQuantizationType[name]
    path = tmp_path / f"{name}.gguf"
    writer = GGUFWriter(str(path), "bert")
    writer.add_uint32("bert.block_count", 1)
    if qtype == GGMLQuantizationType.F32:
        writer.add_tensor("t.weight", original)
    elif qtype == GGMLQuantizationType.F16:
        writer.add_tensor("t.weight", original.astype(np.float16))
    else:
        packed = quantize(original, qtype)
        writer.add_tensor("t.weight", packed, raw_shape=packed.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    f = GgufFile.open(path)
    assert f.tensor_types() == {"t.weight": name}
    got = f.tensors()["t.weight"]
    assert got.shape == original.shape and got.dtype == np.float32
    error = np.max(np.abs(got - original)) / np.max(np.abs(original))
    assert error <= TOLERANCE[name], error
    assert np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.99


def _probe(count: int) -> bytes:
    """96 bytes claiming a metadata array of ``count`` uint8 items."""

    def string(raw: bytes) -> bytes:
        return struct.pack("<Q", len(raw)) + raw

    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + string(b"general.architecture") + struct.pack("<I", 8)
    return data + string(b"bert") + string(b"x") + struct.pack("<IIQ", 9, 0, count)


@pytest.mark.parametrize("count", [2**62, 2**64 - 1, 100])
def test_a_count_past_the_file_is_refused_before_allocating(count, tmp_path):
    """The probe that grew the converter to 3.2 GB: refused at once, allocating nothing to speak of."""
    path = tmp_path / "probe.gguf"
    path.write_bytes(_probe(count))
    tracemalloc.start()
    try:
        with pytest.raises(GgufError, match=r"probe.gguf: not a readable GGUF file: metadata 'x''s item count is \d+"):
            GgufFile.open(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_strings_in_all_arrays_are_limited(tmp_path):
    writer = GGUFWriter(str(tmp_path / "t.gguf"), "bert")
    writer.add_array("a", ["x"] * 6)
    writer.add_array("b", ["y"] * 6)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert GgufFile.open(tmp_path / "t.gguf", Limits(strings=12)).metadata["b"] == ["y"] * 6
    with pytest.raises(GgufError, match="the metadata arrays hold more than 11 strings"):
        GgufFile.open(tmp_path / "t.gguf", Limits(strings=11))
