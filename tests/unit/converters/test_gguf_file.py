"""GgufFile reads every quantisation the gguf package can write, in the right shape and order."""

from __future__ import annotations

import numpy as np
import pytest

# The converter's unit tests need its [convert] extra (not torch); without it they skip.
pytest.importorskip("gguf", reason="needs the [convert] extra")

from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from rerank.converters.gguf_file import GgufFile

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
