"""The CPU line every bench figure carries: model name and the matrix features it has and lacks."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="needs the [convert] extra")

from bench.measure import cpu_line
from rerank.service.backends.cpu_features import parse_cpuinfo

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
"""
ZEN5 = """processor\t: 0
model name\t: AMD EPYC 9R45
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16
"""
HASWELL = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2680 v3
flags\t\t: fpu sse avx avx2 fma
"""


def test_amx_machine_has_every_matrix_feature() -> None:
    assert cpu_line(parse_cpuinfo(SAPPHIRE_RAPIDS), 2) == (
        "Intel(R) Xeon(R) Platinum 8480+, 2 CPUs; has AMX-BF16, AMX-INT8, AVX-512 BF16, AVX-512 VNNI, AVX-VNNI, AVX2"
    )


def test_missing_features_are_named_so_no_amx_reads_as_no_amx() -> None:
    assert cpu_line(parse_cpuinfo(ZEN5)) == (
        "AMD EPYC 9R45; has AVX-512 BF16, AVX-512 VNNI, AVX2; lacks AMX-BF16, AMX-INT8, AVX-VNNI"
    )
    assert cpu_line(parse_cpuinfo(HASWELL), 4).endswith(
        "4 CPUs; has AVX2; lacks AMX-BF16, AMX-INT8, AVX-512 BF16, AVX-512 VNNI, AVX-VNNI"
    )


def test_a_cpu_without_flags_says_where_they_were_missing() -> None:
    line = cpu_line(parse_cpuinfo("model name\t: Apple M3\n", source="/proc/cpuinfo"))
    assert line.startswith("Apple M3; has none of them; lacks AMX-BF16") and "no x86 'flags' line" in line
